"""Verify: prove a built wheel is upstream's wheel plus exactly the series' changes.

Checked on the file as written, against the upstream wheel read again from disk:
member names and order; untouched members byte-identical (compressed bytes, CRC, sizes);
changed members equal the patched tree; RECORD complete and correct; METADATA Version,
vllm/_version.py and the WHEEL tags agree with the file name and VERSION. Upstream's own
RECORD is checked once per upstream sha256 (remembered in the cache).
"""

import hashlib
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild.overlay import VERSION_FILE, WheelPlan
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.wheelbuild.zipraw import data_span
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.wheelfile import check_version_and_tags, open_wheel, read_record
from vllm_overlay.common import wheelfile

_CHUNK = 4 << 20


def _raw_equal(fp_a, span_a, fp_b, span_b) -> bool:
    (off_a, len_a), (off_b, len_b) = span_a, span_b
    if len_a != len_b:
        return False
    fp_a.seek(off_a)
    fp_b.seek(off_b)
    while len_a:
        n = min(_CHUNK, len_a)
        if fp_a.read(n) != fp_b.read(n):
            return False
        len_a -= n
    return True


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


def verify_wheel(plan: WheelPlan, built: Path, record: BuildRecord) -> None:
    upstream_dist_info = wheelfile.dist_info(record.pin.upstream_version)
    check_upstream_record(plan.upstream, record.upstream.sha256, upstream_dist_info)
    zf_new, zf_old = open_wheel(built), open_wheel(plan.upstream)
    with zf_new, zf_old, open(built, "rb") as fp_new, open(plan.upstream, "rb") as fp_old:
        names = zf_new.namelist()
        expected = [m.name for m in plan.members]
        if names != expected:
            diff = sorted(set(names) ^ set(expected))[:5]
            raise OverlayError(f"{built.name}: members differ from the plan: {diff or 'order'}")
        infos_new = {i.filename: i for i in zf_new.infolist()}
        infos_old = {i.filename: i for i in zf_old.infolist()}
        new_members = []
        for member in plan.members:
            info = infos_new[member.name]
            if member.source is None:
                new_members.append(member.name)
                if zf_new.read(member.name) != member.data:
                    raise OverlayError(f"{built.name}: {member.name} differs from the patched tree")
                continue
            old = infos_old[member.source]
            same = (info.CRC, info.file_size, info.compress_type) == \
                (old.CRC, old.file_size, old.compress_type) and \
                _raw_equal(fp_new, data_span(fp_new, info), fp_old, data_span(fp_old, old))
            if not same:
                raise OverlayError(f"{built.name}: {member.name} is not byte-identical to "
                                   f"upstream's {member.source}")
        dist_info = wheelfile.dist_info(plan.version)
        record = dist_info + "RECORD"
        check_record_against_content(zf_new, record, names=new_members)
        old_record = read_record(zf_old, upstream_dist_info + "RECORD")
        new_record = read_record(zf_new, record)
        for member in plan.members:
            if member.source is not None and new_record[member.name] != old_record[member.source]:
                raise OverlayError(f"{record}: row for {member.name} differs from upstream's")
        check_version_and_tags(zf_new, built.name, dist_info, plan.version)
        scope: dict = {}
        exec(zf_new.read(VERSION_FILE).decode(), scope)  # our own generated two-liner
        if scope.get("__version__") != plan.version:
            raise OverlayError(f"{built.name}: {VERSION_FILE} says {scope.get('__version__')}")

