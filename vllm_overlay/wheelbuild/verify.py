"""Verify: prove a built wheel is upstream's wheel plus exactly the series' changes.

Checked on the file as written (its central directory and local headers, and the members
it adds, read back), against upstream's central directory and local headers and what the
one pass of overlay.write_wheel recorded: member names and order; untouched members
byte-identical (CRC, sizes and compression from upstream's central directory; compressed
bytes: see check_copied); changed members equal the patched tree; RECORD complete and
correct; METADATA Version, vllm/_version.py and the WHEEL tags agree with the file name and
VERSION. Upstream's own RECORD is checked once per upstream sha256 (remembered in the cache).
"""

import hashlib
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild.overlay import VERSION_FILE, WheelPlan, Written
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.wheelbuild.zipraw import data_span
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.wheelfile import check_version_and_tags, open_wheel, read_record
from vllm_overlay.common import wheelfile

_CHUNK = 4 << 20


def check_record_against_content(zf: zipfile.ZipFile, record_name: str,
                                 names: list[str] | None = None) -> None:
    """Every member listed once, hash and size right (RECORD itself without hash)."""
    record = read_record(zf, record_name)
    members = zf.namelist()
    if set(record) != set(members):
        extra, missing = set(record) - set(members), set(members) - set(record)
        raise OverlayError(f"{record_name}: lists {sorted(extra)[:3]} not in the wheel, "
                           f"misses {sorted(missing)[:3]}")
    if record[record_name] != ("", ""):
        raise OverlayError(f"{record_name}: its own row must have no hash and size")
    for name in names if names is not None else members:
        if name == record_name:
            continue
        digest, size = hashlib.sha256(), 0
        with zf.open(name) as member:  # streamed (members reach hundreds of MB); checks CRC
            while chunk := member.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        hashed = wheelfile.record_digest(digest.digest())
        if record[name] != (hashed, str(size)):
            raise OverlayError(f"{record_name}: wrong hash or size for {name}")


def check_upstream_record(upstream: Path, sha256: str, dist_info: str) -> None:
    """Once per upstream wheel: its RECORD matches its content (remembered in the cache)."""
    marker = cache_dir() / "sha256" / f"{sha256}.record-ok"
    if marker.exists():
        return
    with zipfile.ZipFile(upstream) as zf:
        check_record_against_content(zf, dist_info + "RECORD")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("upstream RECORD matches content\n")
    except OSError:
        pass  # a read-only cache: checked now, and again next time


def check_copied(plan: WheelPlan, written: Written, zf_new: zipfile.ZipFile,
                 zf_old: zipfile.ZipFile, fp_new, fp_old) -> None:
    """Each untouched member is upstream's, byte for byte, without reading either wheel again.

    The pass copied each member's compressed bytes as it read them from the upstream wheel,
    whose every byte it hashed and compared with the pinned sha256 (write_wheel): the bytes
    at out_offset of the new wheel are those at src_offset of the pinned upstream. Here, on
    both files' own headers: that src_offset is where upstream's local header puts the
    member's data, that out_offset is where the new wheel's puts it, the lengths are
    upstream's compressed size, and CRC, sizes and compression are upstream's.
    """
    expected = [(m.name, m.source) for m in plan.members if m.source is not None]
    if [(c.name, c.source) for c in written.copied] != expected:
        raise OverlayError(f"{plan.filename}: the pass copied other members than the plan's")
    for copied in written.copied:
        new, old = zf_new.getinfo(copied.name), zf_old.getinfo(copied.source)
        fields = ("CRC", "file_size", "compress_size", "compress_type")
        same = [getattr(new, f) for f in fields] == [getattr(old, f) for f in fields] and \
            data_span(fp_old, old) == (copied.src_offset, copied.length) and \
            data_span(fp_new, new) == (copied.out_offset, copied.length)
        if not same:
            raise OverlayError(f"{plan.filename}: {copied.name} is not byte-identical to "
                               f"upstream's {copied.source}")


def check_new_members(plan: WheelPlan, zf_new: zipfile.ZipFile, zf_old: zipfile.ZipFile,
                      upstream_record: str) -> None:
    """The new members, read back, are what the plan made; RECORD lists them with their
    real hash and size, and every copied member with upstream's row."""
    new_members = [m.name for m in plan.members if m.source is None]
    for member in plan.members:
        if member.source is None and zf_new.read(member.name) != member.content():
            made = "the patched tree" if member.name in plan.changed else \
                "what this build made for it (metadata, the SBOM)"
            raise OverlayError(f"{plan.filename}: {member.name} differs from {made}")
    record = wheelfile.dist_info(plan.version) + "RECORD"
    check_record_against_content(zf_new, record, names=new_members)
    old_record = read_record(zf_old, upstream_record)
    new_record = read_record(zf_new, record)
    for member in plan.members:
        if member.source is not None and new_record[member.name] != old_record[member.source]:
            raise OverlayError(f"{record}: row for {member.name} differs from upstream's")


def verify_wheel(plan: WheelPlan, built: Path, record: BuildRecord, written: Written) -> None:
    """The wheel write_wheel wrote at `built` (`written`: what its pass recorded)."""
    upstream_dist_info = wheelfile.dist_info(record.pin.upstream_version)
    check_upstream_record(plan.upstream, record.upstream.sha256, upstream_dist_info)
    zf_new, zf_old = open_wheel(built), open_wheel(plan.upstream)
    with zf_new, zf_old, open(built, "rb") as fp_new, open(plan.upstream, "rb") as fp_old:
        names = zf_new.namelist()
        expected = [m.name for m in plan.members]
        if names != expected:
            diff = sorted(set(names) ^ set(expected))[:5]
            raise OverlayError(f"{built.name}: members differ from the plan: {diff or 'order'}")
        check_copied(plan, written, zf_new, zf_old, fp_new, fp_old)
        check_new_members(plan, zf_new, zf_old, upstream_dist_info + "RECORD")
        dist_info = wheelfile.dist_info(plan.version)
        check_version_and_tags(zf_new, built.name, dist_info, plan.version)
        scope: dict = {}
        exec(zf_new.read(VERSION_FILE).decode(), scope)  # our own generated two-liner
        if scope.get("__version__") != plan.version:
            raise OverlayError(f"{built.name}: {VERSION_FILE} says {scope.get('__version__')}")
