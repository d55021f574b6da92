"""Patch 0005: the vLLM 0.19.1 key ``encoder_cudagraph_max_images_per_batch``
keeps working as a deprecated alias of
``encoder_cudagraph_max_vision_items_per_batch`` (the 0.20 name).

Runs against the installed (or dev-site) vLLM; no GPU, no engine start.
"""

from __future__ import annotations

import json
import logging

import pytest

OLD_KEY = "encoder_cudagraph_max_images_per_batch"
NEW_KEY = "encoder_cudagraph_max_vision_items_per_batch"


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def old_key_warnings(cpu_platform):
    """Returns a callable giving the messages of vLLM warnings that mention
    the old key, logged since the fixture started.

    vLLM's loggers do not propagate to the root logger, so the handler sits on
    the ``vllm`` logger; ``warning_once``'s memory is cleared around the test.
    """
    from vllm.logger import _print_warning_once

    _print_warning_once.cache_clear()
    handler = _ListHandler()
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.addHandler(handler)
    try:
        yield lambda: [
            r.getMessage() for r in handler.records if OLD_KEY in r.getMessage()
        ]
    finally:
        vllm_logger.removeHandler(handler)
        _print_warning_once.cache_clear()


def _items(cfg) -> int:
    return cfg.encoder_cudagraph_max_vision_items_per_batch


# ---------------------------------------------------------------------------
# CompilationConfig(...) keyword arguments
# ---------------------------------------------------------------------------


def test_kwargs_old_key_alone_is_used_with_one_warning(old_key_warnings):
    from vllm.config import CompilationConfig

    cfg = CompilationConfig(**{OLD_KEY: 5})
    assert _items(cfg) == 5
    messages = old_key_warnings()
    assert len(messages) == 1, messages
    assert NEW_KEY in messages[0]
    assert "deprecated" in messages[0]


def test_kwargs_new_key_alone_does_not_warn(old_key_warnings):
    from vllm.config import CompilationConfig

    cfg = CompilationConfig(**{NEW_KEY: 5})
    assert _items(cfg) == 5
    assert old_key_warnings() == []


def test_kwargs_both_equal_one_warning(old_key_warnings):
    from vllm.config import CompilationConfig

    cfg = CompilationConfig(**{OLD_KEY: 3, NEW_KEY: 3})
    assert _items(cfg) == 3
    messages = old_key_warnings()
    assert len(messages) == 1, messages
    assert NEW_KEY in messages[0]


def test_kwargs_both_different_is_error_naming_keys_and_values(cpu_platform):
    from vllm.config import CompilationConfig

    with pytest.raises(ValueError) as exc_info:
        CompilationConfig(**{OLD_KEY: 2, NEW_KEY: 8})
    message = str(exc_info.value)
    assert f"{OLD_KEY}=2" in message
    assert f"{NEW_KEY}=8" in message


def test_old_attribute_reads_new_field(cpu_platform):
    from vllm.config import CompilationConfig

    cfg = CompilationConfig(**{NEW_KEY: 7})
    assert getattr(cfg, OLD_KEY) == 7
    setattr(cfg, OLD_KEY, 9)
    assert _items(cfg) == 9


# ---------------------------------------------------------------------------
# --compilation-config JSON through vLLM's real argument parser
# ---------------------------------------------------------------------------


@pytest.fixture
def model_dir(tiny_qwen3_vl_dir) -> str:
    # A local model: with HF_HUB_OFFLINE=1, EngineArgs resolves the model
    # name on construction and a hub name would fail.
    return str(tiny_qwen3_vl_dir)


@pytest.fixture
def cli_parser(cpu_platform, model_dir):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    return lambda argv: parser.parse_args(["--model", model_dir, *argv])


def test_cli_json_old_key(cli_parser, old_key_warnings):
    from vllm.config import CompilationConfig
    from vllm.engine.arg_utils import EngineArgs

    args = cli_parser(["--compilation-config", json.dumps({OLD_KEY: 6})])
    engine_args = EngineArgs.from_cli_args(args)
    assert isinstance(engine_args.compilation_config, CompilationConfig)
    assert _items(engine_args.compilation_config) == 6
    messages = old_key_warnings()
    assert len(messages) == 1, messages
    assert NEW_KEY in messages[0]


def test_cli_dotted_old_key(cli_parser):
    from vllm.engine.arg_utils import EngineArgs

    args = cli_parser([f"-cc.{OLD_KEY}=4"])
    assert _items(EngineArgs.from_cli_args(args).compilation_config) == 4


def test_cli_json_both_equal(cli_parser):
    from vllm.engine.arg_utils import EngineArgs

    args = cli_parser(["--compilation-config", json.dumps({OLD_KEY: 3, NEW_KEY: 3})])
    assert _items(EngineArgs.from_cli_args(args).compilation_config) == 3


def test_cli_json_both_different_is_error(cli_parser, capsys):
    with pytest.raises(SystemExit):
        cli_parser(["--compilation-config", json.dumps({OLD_KEY: 1, NEW_KEY: 2})])
    err = capsys.readouterr().err
    assert f"{OLD_KEY}=1" in err
    assert f"{NEW_KEY}=2" in err


# ---------------------------------------------------------------------------
# EngineArgs(compilation_config={...}) and LLM(compilation_config={...})
# ---------------------------------------------------------------------------


def test_engine_args_dict_old_key(model_dir):
    from vllm.engine.arg_utils import EngineArgs

    engine_args = EngineArgs(model=model_dir, compilation_config={OLD_KEY: 5})
    assert _items(engine_args.compilation_config) == 5


class _EngineArgsSeen(Exception):
    pass


@pytest.fixture
def llm_without_engine(model_dir, monkeypatch):
    """``LLM`` whose engine creation stops and hands back the EngineArgs that
    LLM.__init__ built (its dict -> CompilationConfig conversion ran)."""
    from vllm.entrypoints import llm as llm_module

    def from_engine_args(engine_args, usage_context=None):
        raise _EngineArgsSeen(engine_args)

    monkeypatch.setattr(llm_module.LLMEngine, "from_engine_args", from_engine_args)

    def make(**kwargs):
        with pytest.raises(_EngineArgsSeen) as exc_info:
            llm_module.LLM(model=model_dir, **kwargs)
        return exc_info.value.args[0]

    return make


def test_llm_dict_old_key(llm_without_engine):
    from vllm.config import CompilationConfig

    engine_args = llm_without_engine(compilation_config={OLD_KEY: 6})
    assert isinstance(engine_args.compilation_config, CompilationConfig)
    assert _items(engine_args.compilation_config) == 6


def test_llm_dict_both_different_is_error(llm_without_engine):
    with pytest.raises(ValueError) as exc_info:
        llm_without_engine(compilation_config={OLD_KEY: 2, NEW_KEY: 4})
    assert f"{OLD_KEY}=2" in str(exc_info.value)
    assert f"{NEW_KEY}=4" in str(exc_info.value)


def test_llm_dict_unknown_key_still_rejected(llm_without_engine):
    with pytest.raises(ValueError, match="no_such_key"):
        llm_without_engine(compilation_config={"no_such_key": 1})


# ---------------------------------------------------------------------------
# Hash / repr / serialisation do not depend on the spelling
# ---------------------------------------------------------------------------


def test_compute_hash_same_for_both_spellings(cpu_platform):
    from vllm.config import CompilationConfig

    old = CompilationConfig(**{OLD_KEY: 4})
    new = CompilationConfig(**{NEW_KEY: 4})
    assert old.compute_hash() == new.compute_hash()
    # the value does enter the hash
    assert old.compute_hash() != CompilationConfig(**{NEW_KEY: 5}).compute_hash()


def test_repr_and_dump_have_only_new_key(cpu_platform):
    from pydantic import TypeAdapter

    from vllm.config import CompilationConfig

    old = CompilationConfig(**{OLD_KEY: 4})
    assert repr(old) == repr(CompilationConfig(**{NEW_KEY: 4}))
    assert OLD_KEY not in repr(old)
    dumped = TypeAdapter(CompilationConfig).dump_python(old)
    assert OLD_KEY not in dumped
    assert dumped[NEW_KEY] == 4
