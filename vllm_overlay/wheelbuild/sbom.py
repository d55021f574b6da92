"""The SBOM (PEP 770): a CycloneDX 1.6 document inside the wheel and the same bytes beside it.

`vllm-<VERSION>.dist-info/sboms/vllm.cdx.json` describes the wheel: the component
pkg:pypi/vllm@<VERSION>; its pedigree (ancestors: upstream's sdist and wheel with their
sha256; one patch per series entry, typed backport (Origin: upstream) or unofficial
(Origin: vendor), with its diff and the upstream PR / issue it resolves; notes naming the
series hash); the files the series changed, with their sha256; the runtime dependencies
(Requires-Dist) at the versions of the runtime lock. A document cannot hold the hash of
the wheel that contains it: the wheel's sha256 is in SHA256SUMS and in the provenance
statement (provenance.py), whose subjects are the wheel and this document.

Reproducible: the timestamp is SOURCE_DATE_EPOCH, the serial number a UUID5 of the inputs,
every bom-ref is derived from names. The facts are gathered here (stdlib); the document is
made and schema-validated by cyclonedx-python-lib in the supply venv (cdx.py).
"""

import hashlib
import json
import uuid
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild import constraints, lockmeta, supplyenv
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.wheelbuild.zipraw import RawZipWriter
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common import wheelfile

MEMBER = "sboms/vllm.cdx.json"  # inside the dist-info directory (PEP 770)
_URL_PREFIX = "https://github.com/"


def member_name(version: str) -> str:
    return wheelfile.dist_info(version) + MEMBER


def beside_name(wheel_name: str) -> str:
    """The copy in wheelhouse/: the wheel's file name with .cdx.json for .whl."""
    return wheel_name.removesuffix(".whl") + ".cdx.json"


def urls(values: list[str]) -> list[str]:
    return [word.strip(",") for value in values for word in value.split()
            if word.startswith(_URL_PREFIX)]


def facts(record: BuildRecord, tree: Path, shipped: dict[str, str],
          requires_dist: list[str]) -> dict:
    """Everything the document says, as plain data (the input of cdx.render). The runtime
    lock must satisfy `requires_dist` first: every component then has its locked version."""
    the_pin, lock, version = record.pin, record.lock, record.version
    lockmeta.check_wheel_requirements(record.arch, requires_dist, f"the Requires-Dist of vllm "
                                      f"{the_pin.upstream_version} ({record.arch})",
                                      record.repo, locked=lock.entries)
    upstream = [("sdist", the_pin.sdist), ("wheel", record.upstream)]
    files = [{"path": path,
              "sha256": hashlib.sha256((tree / path).read_bytes()).hexdigest(),
              "patches": ", ".join(p.name for p in record.patches if path in p.files)}
             for path, status in sorted(shipped.items()) if status != "D"]
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "urn:vllm-overlay:sbom:" + ":".join(
        [version, record.arch, record.series_sha, the_pin.sdist.sha256, record.upstream.sha256,
         lock.sha256, *(f["sha256"] for f in files)]))
    return {
        "version": version, "arch": record.arch, "python_version": constraints.PYTHON,
        "epoch": record.epoch, "serial": str(serial),
        "upstream": {"version": the_pin.upstream_version,
                     "artifacts": [{"kind": kind, "filename": a.filename, "sha256": a.sha256}
                                   for kind, a in upstream]},
        "series": {"sha256": record.series_sha, "patches": [
            {"name": p.name, "sha256": record.patch_sha256[p.name], "origin": p.origin,
             "origin_urls": urls(p.trailers.get("Origin", [])),
             "bugs": urls(p.trailers.get("Bug", []) + p.trailers.get("Forwarded", [])),
             "text": p.path.read_text(encoding="utf-8")} for p in record.patches]},
        "requires_dist": requires_dist, "locked": lock.entries, "files": files,
        "lock": {"file": lock.label, "sha256": lock.sha256},
    }


def render(data: dict) -> bytes:
    """The document, made and schema-checked (CycloneDX 1.6) in one run of cdx.py."""
    proc = supplyenv.run_module("cdx", ["render"], json.dumps(data))
    _raise_invalid(proc, "the rendered SBOM")
    return proc.stdout.encode()


def validate(document: bytes, what: str) -> None:
    """Schema-check against CycloneDX 1.6 (the library's bundled strict schema)."""
    proc = supplyenv.run_module("cdx", ["validate"], document.decode("utf-8", "replace"))
    _raise_invalid(proc, what)


def _raise_invalid(proc, what: str) -> None:
    if proc.returncode:
        errors = proc.stderr.strip().splitlines()
        raise OverlayError(f"{what}: not a valid CycloneDX 1.6 document ({len(errors)} "
                           f"error(s)): " + "; ".join(errors[:3]))


def check_wheel(wheel: Path, version: str, expected: bytes) -> None:
    """The wheel carries exactly `expected` (the document render() made and schema-checked)
    at its PEP 770 path, listed in RECORD with the right hash and size."""

    name = member_name(version)
    record_name = wheelfile.dist_info(version) + "RECORD"
    with zipfile.ZipFile(wheel) as zf:
        if name not in zf.namelist():
            raise OverlayError(f"{wheel.name}: no SBOM member {name}")
        data = zf.read(name)
        record = zf.read(record_name).decode()
    rows = [line for line in record.splitlines() if line.split(",", 1)[0] == name]
    if rows != [f"{name},{wheelfile.record_hash(data)},{len(data)}"]:
        raise OverlayError(f"{wheel.name}: {record_name} has no correct row for {name} "
                           f"(found {rows})")
    if data != expected:
        raise OverlayError(f"{wheel.name}: {name} differs from the SBOM of this build's inputs")


def embed(wheel: Path, out: Path, version: str, document: bytes, date_time: tuple) -> None:
    """Write `wheel` plus the SBOM member (and its RECORD row) to `out`; every other member
    is copied raw (the setup.py modes: setuptools has no PEP 770 support)."""
    name, record_name = member_name(version), wheelfile.dist_info(version) + "RECORD"
    with zipfile.ZipFile(wheel) as zf, open(wheel, "rb") as src, open(out, "wb") as fp:
        infos = zf.infolist()
        if name in zf.namelist():
            raise OverlayError(f"{wheel.name}: already has {name}")
        record = zf.read(record_name).decode().splitlines()
        own = [row for row in record if row.startswith(record_name + ",")]
        rows = [row for row in record if row and row not in own]
        rows += [f"{name},{wheelfile.record_hash(document)},{len(document)}", *own]
        writer = RawZipWriter(fp)
        for info in infos:
            if info.filename == record_name:
                writer.add(name, document, date_time)
                writer.add(record_name, ("\n".join(rows) + "\n").encode(), date_time, info)
            else:
                writer.copy_raw(src, info)
        writer.close()
