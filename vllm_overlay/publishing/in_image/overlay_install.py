"""Install the overlay wheel over an installed upstream vLLM, writing only what differs.

The Docker image is upstream's serving image plus our wheel. `pip install --no-deps
--force-reinstall` would delete and rewrite every file of the package, so the new image
layer would hold the whole of vLLM again (~1.5 GB unpacked) even though only a few Python
files changed. This does what that pip command does, without dependencies, but leaves a
file untouched when its bytes already equal the wheel's (checked by sha256 against the
wheel's RECORD): the layer then holds only the changed files and the new dist-info.
The result is a normal installation: the dist-info and RECORD are the wheel's (plus the
console scripts the previous install had), so `pip show` / `pip uninstall` work.

Stdlib only, runnable as a plain script (the Docker build runs it inside the image):
    python3 overlay_install.py WHEEL [--site SITE_PACKAGES]
"""

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import py_compile
import shutil
import sys
import zipfile
from pathlib import Path

INSTALLER = "vllm-overlay"
_DROP_FROM_OLD_INFO = ("direct_url.json",)  # describes the old install's source


class InstallError(Exception):
    pass


def record_hash_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def parse_record(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if row]


def find_site(project: str) -> Path:
    try:
        return Path(importlib.metadata.distribution(project).locate_file(""))
    except importlib.metadata.PackageNotFoundError:
        raise InstallError(f"no installed {project} to install over") from None


def install(wheel: Path, site: Path | None = None, sha256: str | None = None) -> dict[str, int]:
    """Overlay-install `wheel`; returns counts of written, kept and removed files."""
    if sha256:
        got = record_hash_of(wheel)
        want = "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256)).rstrip(b"=").decode()
        if got != want:
            raise InstallError(f"{wheel.name}: sha256 differs from the expected {sha256}")
    project, version = wheel.name.split("-")[:2]
    site = site or find_site(project)
    old_infos = sorted(site.glob(f"{project}-*.dist-info"))
    if len(old_infos) != 1:
        raise InstallError(f"{site}: expected one installed {project}-*.dist-info, found "
                           f"{[p.name for p in old_infos] or 'none'}")
    old_info = old_infos[0]
    old_record = parse_record((old_info / "RECORD").read_text())
    new_info_name = f"{project}-{version}.dist-info"
    counts = {"written": 0, "kept": 0, "removed": 0}
    with zipfile.ZipFile(wheel) as zf:
        record = {row[0]: row for row in parse_record(zf.read(f"{new_info_name}/RECORD").decode())}
        members = [i for i in zf.infolist() if not i.is_dir()]
        if any(i.filename.split("/", 1)[0].endswith(".data") for i in members):
            raise InstallError(f"{wheel.name}: .data/ members are not supported here")
        files = [i for i in members if not i.filename.startswith(new_info_name + "/")]
        for info in files:
            dest = site / info.filename
            expected = record.get(info.filename, [info.filename, ""])[1]
            if not expected:
                raise InstallError(f"{wheel.name}: {info.filename} has no hash in RECORD")
            if dest.is_file() and record_hash_of(dest) == expected:
                counts["kept"] += 1
                continue
            write_member(zf, info, dest)
            counts["written"] += 1
            cached = Path(importlib.util.cache_from_source(str(dest))) \
                if dest.suffix == ".py" else None
            if cached and cached.exists():
                py_compile.compile(str(dest), cfile=str(cached), doraise=True)
        # The new dist-info is assembled beside the old one, then swapped in.
        staging = site / f".{new_info_name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for info in members:
            if info.filename.startswith(new_info_name + "/") and \
                    info.filename != f"{new_info_name}/RECORD":
                write_member(zf, info, staging / info.filename[len(new_info_name) + 1:])
    (staging / "INSTALLER").write_text(INSTALLER + "\n")
    new_names = {i.filename for i in files}
    rows = [record[i.filename] for i in files]
    rows += [record[n] for n in record if n.startswith(new_info_name + "/") and
             not n.endswith("/RECORD")]
    rows.append([f"{new_info_name}/INSTALLER", record_hash_of(staging / "INSTALLER"),
                 str((staging / "INSTALLER").stat().st_size)])
    # Console scripts live outside site-packages (../../../bin/vllm) and do not change.
    rows += [row for row in old_record if row[0].startswith("../")]
    # Bytecode of a module that is still shipped stays (recompiled above if it changed).
    kept_pyc = [row[0] for row in old_record if compiled_source(row[0]) in new_names
                and (site / row[0]).is_file()]
    rows += [[path, record_hash_of(site / path), str((site / path).stat().st_size)]
             for path in kept_pyc]
    rows.append([f"{new_info_name}/RECORD", "", ""])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    (staging / "RECORD").write_text(out.getvalue())
    for row in old_record:
        path = row[0]
        if path.startswith("../") or path.startswith(old_info.name + "/") or \
                path in new_names or path in kept_pyc:
            continue
        target = site / path
        if target.is_file() or target.is_symlink():
            target.unlink()
            counts["removed"] += 1
            if target.suffix == ".py":
                Path(importlib.util.cache_from_source(str(target))).unlink(missing_ok=True)
    shutil.rmtree(old_info)
    os.replace(staging, site / new_info_name)
    return counts


def compiled_source(path: str) -> str | None:
    """vllm/__pycache__/x.cpython-312.pyc -> vllm/x.py (None for anything else)."""
    parts = path.split("/")
    if len(parts) < 2 or parts[-2] != "__pycache__" or not parts[-1].endswith(".pyc"):
        return None
    return "/".join(parts[:-2] + [parts[-1].split(".", 1)[0] + ".py"])


def write_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.overlay-tmp")
    with zf.open(info) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    mode = (info.external_attr >> 16) & 0o777
    os.chmod(tmp, 0o755 if mode & 0o111 else 0o644)
    os.replace(tmp, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--site", type=Path, help="site-packages holding the installed project "
                        "(default: where Python finds it)")
    parser.add_argument("--sha256", help="refuse the wheel unless it has this sha256 (hex)")
    args = parser.parse_args(argv)
    try:
        counts = install(args.wheel, args.site, args.sha256)
    except (InstallError, OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        print(f"error: overlay install of {args.wheel}: {exc}", file=sys.stderr)
        return 1
    print(f"overlay-install: {args.wheel.name}: {counts['written']} file(s) written, "
          f"{counts['kept']} unchanged kept, {counts['removed']} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
