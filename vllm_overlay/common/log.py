"""Status lines on stderr: one logger per stage, each line shown as `<stage>: <message>`."""

import logging
import sys

_PACKAGE = "vllm_overlay"


class _Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at the time (callers and tests may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _StageFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.name.removeprefix(_PACKAGE + '.')}: {record.getMessage()}"


_root = logging.getLogger(_PACKAGE)
if not _root.handlers:
    _handler = _Stderr()
    _handler.setFormatter(_StageFormatter())
    _root.addHandler(_handler)
    _root.setLevel(logging.INFO)
    _root.propagate = False


def stage(name: str) -> logging.Logger:
    """The logger of one stage: `stage("fetch").info("x")` prints `fetch: x`."""
    return logging.getLogger(f"{_PACKAGE}.{name}")
