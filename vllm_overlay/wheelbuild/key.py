"""The build key: what decides whether `make wheel` has anything to do.

It covers the pin, the series, the date stamped into the wheel, and the code that shapes
the wheel (wheelbuild/ and the shared common/ layer), nothing else: editing the test harness,
the status code or the distribution code leaves `make wheel` a no-op.
"""

import hashlib
from pathlib import Path

import vllm_overlay
from vllm_overlay import common, wheelbuild
from vllm_overlay.wheelbuild.record import BuildRecord

PACKAGE = Path(vllm_overlay.__file__).parent
# the subpackages whose code can change a built wheel, named from the package itself
WHEEL_SHAPING = tuple(sub.__name__.rpartition(".")[2] for sub in (wheelbuild, common))


def wheel_code_digest() -> str:
    """sha256 over the modules of WHEEL_SHAPING (names and bytes)."""
    digest = hashlib.sha256()
    for sub in WHEEL_SHAPING:
        for path in sorted((PACKAGE / sub).rglob("*.py")):
            digest.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    return digest.hexdigest()


def build_key(record: BuildRecord, extra: list[str] = ()) -> str:
    parts = [record.pin.overlay_version, record.arch, record.pin.sdist.sha256,
             record.upstream.sha256, record.series_sha, str(record.epoch), wheel_code_digest(),
             f"mode={record.mode}", *extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
