"""Wheel files (PEP 427 / 491): the tags a file name states, RECORD rows and hashes, and the
check that METADATA and WHEEL agree with the name."""

import base64
import csv
import hashlib
import io
import re
import zipfile

from vllm_overlay.common.errors import OverlayError


def record_hash(data: bytes) -> str:
    """A RECORD row's hash of `data`: sha256=<urlsafe base64, unpadded>."""
    return record_digest(hashlib.sha256(data).digest())


def record_digest(digest: bytes) -> str:
    """The same for a sha256 digest already computed (a streamed member)."""
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dist_info(version: str, project: str = "vllm") -> str:
    """The dist-info folder of a wheel of `project` `version`, with its trailing slash."""
    return f"{project}-{version}.dist-info/"


def name_tags(filename: str) -> list[str]:
    """The wheel tags a file name states, e.g. ['cp38-abi3-manylinux_2_31_x86_64']."""
    pythons, abis, platforms = filename[:-4].split("-")[-3:]
    return [f"{py}-{abi}-{plat}" for py in pythons.split(".") for abi in abis.split(".")
            for plat in platforms.split(".")]


def read_record(zf: zipfile.ZipFile, name: str) -> dict[str, tuple[str, str]]:
    """RECORD as path -> (hash, size); a malformed or duplicate row is an error."""
    rows = list(csv.reader(io.StringIO(zf.read(name).decode())))
    record: dict[str, tuple[str, str]] = {}
    for row in rows:
        if not row:
            continue
        if len(row) != 3 or row[0] in record:
            raise OverlayError(f"{name}: malformed or duplicate row {row!r}")
        record[row[0]] = (row[1], row[2])
    return record


def check_version_and_tags(zf: zipfile.ZipFile, filename: str, dist_info: str,
                           version: str) -> None:
    """METADATA states `version`; WHEEL's Tag lines are exactly the file name's tags."""
    metadata = zf.read(dist_info + "METADATA").decode()
    if not re.search(rf"^Version: {re.escape(version)}$", metadata, re.M):
        raise OverlayError(f"{filename}: METADATA Version is not {version}")
    tags = re.findall(r"^Tag: (\S+)$", zf.read(dist_info + "WHEEL").decode(), re.M)
    if sorted(tags) != sorted(name_tags(filename)):
        raise OverlayError(f"{filename}: WHEEL tags {tags} do not match the file "
                           f"name's {name_tags(filename)}")


def open_wheel(path, label: str | None = None) -> zipfile.ZipFile:
    """The wheel as a zip; a file that is no zip is an error naming it (`label`, else path)."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise OverlayError(f"{label or path}: not a valid wheel (zip): {exc}") from exc
