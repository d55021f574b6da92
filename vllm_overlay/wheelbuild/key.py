"""The build key: what decides whether `make wheel` has anything to do.

It covers the pin, the series, the date stamped into the wheel, and the code that shapes
the wheel (wheelbuild/ and the shared common/ layer), nothing else: editing the test harness,
the status code or the distribution code leaves `make wheel` a no-op.
"""

import datetime
import email.utils
import hashlib
import os

from pathlib import Path

import vllm_overlay
from vllm_overlay import common, wheelbuild
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError

PACKAGE = Path(vllm_overlay.__file__).parent
# the subpackages whose code can change a built wheel, named from the package itself
WHEEL_SHAPING = tuple(sub.__name__.rpartition(".")[2] for sub in (wheelbuild, common))


def source_date_epoch(patches: list[series.Patch], released: str) -> int:
    """SOURCE_DATE_EPOCH if set, else the newest patch date, else the upstream release date."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        if not env.strip().isdigit():
            raise OverlayError(f"SOURCE_DATE_EPOCH={env!r} is not a whole number of seconds "
                               f"since 1970-01-01 UTC (e.g. SOURCE_DATE_EPOCH=1700000000)")
        return int(env)
    dates = [email.utils.parsedate_to_datetime(p.date).timestamp() for p in patches if p.date]
    release = datetime.datetime.fromisoformat(released.replace("Z", "+00:00")).timestamp()
    return int(max(dates, default=release))


def wheel_code_digest() -> str:
    """sha256 over the modules of WHEEL_SHAPING (names and bytes)."""
    digest = hashlib.sha256()
    for sub in WHEEL_SHAPING:
        for path in sorted((PACKAGE / sub).rglob("*.py")):
            digest.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    return digest.hexdigest()


def build_key(the_pin: pin.Pin, arch: str, series_sha: str, epoch: int,
              mode: str = "overlay", extra: list[str] = ()) -> str:
    parts = [the_pin.overlay_version, arch, the_pin.sdist.sha256, the_pin.wheel(arch).sha256,
             series_sha, str(epoch), wheel_code_digest(), f"mode={mode}", *extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
