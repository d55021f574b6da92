"""The overlay build's one pass (overlay.write_wheel) and what verify.check_copied takes from it.

The pass copies each untouched member's compressed bytes as it reads and hashes the upstream
wheel, and records where they came from and went; verify_wheel checks those records against
both files' own headers instead of reading both wheels again. Each test here breaks one of
those facts and expects the build to refuse the wheel (and to leave the wheelhouse alone).
"""

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.synthetic import CHANGE_A, build
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.wheelbuild import overlay, zipraw

NOT_UPSTREAMS = r"vllm/_C\.abi3\.so is not byte-identical to upstream's vllm/_C\.abi3\.so"


@pytest.fixture
def series(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    return synth


def after_the_pass(monkeypatch, change) -> None:
    """write_wheel as built, then `change(out, written)` -> the Written verify gets."""
    real = overlay.write_wheel

    def write_wheel(plan, out, record):
        return change(out, real(plan, out, record))
    monkeypatch.setattr(overlay, "write_wheel", write_wheel)


def test_blocks_smaller_than_members_give_the_same_wheel(series, monkeypatch):
    """Spans across the reader's blocks (every real wheel: 8 MiB blocks, members of 100s of
    MB; the synthetic wheel fits in one block): the same bytes as one block."""
    whole = build(series).read_bytes()
    (series.wheelhouse / ".state-x86_64.json").unlink()  # build again, not a no-op
    monkeypatch.setattr(overlay.UpstreamStream, "BLOCK", 4093)  # a prime: odd boundaries
    assert hashlib.sha256(build(series).read_bytes()).digest() == \
        hashlib.sha256(whole).digest()


def flip_central_crc(path: Path, name: str) -> None:
    """Flip a bit of the CRC that the central directory gives member `name`."""
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02", data.index(name.encode(), start) - 46)
    data[entry + 16] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_copied_member_with_another_crc_than_upstreams_is_refused(series, monkeypatch):
    after_the_pass(monkeypatch, lambda out, written: (
        flip_central_crc(out, "vllm/_C.abi3.so"), written)[1])
    with pytest.raises(OverlayError, match=NOT_UPSTREAMS):
        build(series)
    assert not list(series.wheelhouse.glob("*.whl"))


@pytest.mark.parametrize("field", ["src_offset", "out_offset", "length"])
def test_a_copied_span_not_where_the_headers_put_it_is_refused(series, monkeypatch, field):
    """The pass's record of a copy must match upstream's and the new wheel's local headers."""
    def shift(out, written):
        copied = [dataclasses.replace(c, **{field: getattr(c, field) + 1})
                  if c.name == "vllm/_C.abi3.so" else c for c in written.copied]
        return dataclasses.replace(written, copied=copied)
    after_the_pass(monkeypatch, shift)
    with pytest.raises(OverlayError, match=NOT_UPSTREAMS):
        build(series)


def test_a_pass_that_copied_other_members_than_the_plan_is_refused(series, monkeypatch):
    after_the_pass(monkeypatch, lambda out, written: dataclasses.replace(
        written, copied=written.copied[1:]))
    with pytest.raises(OverlayError, match="the pass copied other members than the plan's"):
        build(series)


def test_a_new_member_written_other_than_planned_is_refused(series, monkeypatch):
    """verify reads each new member back (the checks of the file as written, unchanged)."""
    real = zipraw.RawZipWriter.add

    def add(self, name, data, *args, **kwargs):
        return real(self, name, data + b"#" if name == "vllm/a.py" else data, *args, **kwargs)
    monkeypatch.setattr(zipraw.RawZipWriter, "add", add)
    with pytest.raises(OverlayError, match="vllm/a.py differs from the patched tree"):
        build(series)


def test_a_record_row_of_a_copied_member_other_than_upstreams_is_refused(series, monkeypatch):
    real = overlay.render_record

    def render_record(plan, rows):
        row = rows["vllm/_C.abi3.so"]
        return real(plan, {**rows, "vllm/_C.abi3.so": (row[0], str(int(row[1]) + 1))})
    monkeypatch.setattr(overlay, "render_record", render_record)
    with pytest.raises(OverlayError, match="row for vllm/_C.abi3.so differs from upstream's"):
        build(series)
