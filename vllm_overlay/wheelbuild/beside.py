"""The supply-chain files every build writes beside its wheel in wheelhouse/.

- `<wheel>.cdx.json`: the SBOM, byte-identical to the one inside the wheel (sbom.py);
- `<wheel>.intoto.json`: the provenance statement (provenance.py), subjects the wheel and
  that SBOM copy;
- `constraints-<arch>.txt`: the hash-locked runtime plus `vllm==<VERSION>` with the sha256
  of each wheel of this version and arch in SHA256SUMS (constraints.py).
"""

import hashlib
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild import constraints, provenance, sbom, supplyenv
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.common import index
from vllm_overlay.common.errors import OverlayError


def inputs(record: BuildRecord) -> list[str]:
    """What the files beside the wheel depend on beyond the wheel's inputs (for build keys)."""
    return [f"lock={record.lock.sha256}",
            f"lock-metadata={constraints.sha256_text(record.lock.metadata_text)}",
            f"supply={constraints.sha256_text(supplyenv.LOCK.read_text())}"]


def beside_wheel(wheelhouse: Path, wheel: Path, sha256: str,
                 record: BuildRecord) -> dict[str, str]:
    """file name -> text of the files to publish beside `wheel` (already in SHA256SUMS)."""
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as zf:
        if sbom.member_name(version) not in zf.namelist():
            raise OverlayError(f"{wheel.name}: no SBOM member {sbom.member_name(version)} "
                               "(every build mode embeds one: wheelbuild/sbom.py)")
        document = zf.read(sbom.member_name(version)).decode()
    sbom_name = sbom.beside_name(wheel.name)
    subjects = {wheel.name: sha256, sbom_name: hashlib.sha256(document.encode()).hexdigest()}
    files = {sbom_name: document,
             provenance.beside_name(wheel.name): provenance.statement(subjects, record, version)}
    overlay, arch = record.pin.overlay_version, record.arch
    wheels = {name: digest for name, digest in index.read_sums(wheelhouse).items()
              if name.startswith(f"vllm-{overlay}-") and name.endswith(f"_{arch}.whl")}
    files[f"constraints-{arch}.txt"] = constraints.render_constraints(
        arch, wheels, overlay, record.lock.label, record.lock.text)
    return files
