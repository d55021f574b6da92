"""The real pinned artifacts (downloaded on a cold cache) with a trivial patch."""

import re
import shutil
import zipfile

import pytest

from vllm_overlay.wheelbuild import apply
from vllm_overlay.common.git import git
from vllm_overlay.wheelbuild import export
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.wheelbuild import overlay_mode
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

pytestmark = pytest.mark.network

TARGET = "vllm/v1/worker/encoder_cudagraph.py"


@pytest.mark.once_per_inputs
def test_real_overlay_build_with_a_trivial_patch(tmp_path):
    repo = tmp_path / "repo"
    (repo / "patches").mkdir(parents=True)
    for name in ("VERSION", "upstream.lock.json"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "locks", repo / "locks")  # the SBOM and constraints read the lock
    the_pin = pin.load(repo)
    sdist = fetch.fetch(the_pin.sdist)
    tree = tmp_path / "dev" / "vllm"
    apply.unpack_sdist(sdist, tree)
    apply.init_base(tree, the_pin.released)
    path = tree / TARGET
    path.write_text(path.read_text() + "\n# overlay test marker\n")
    git(tree, "commit", "-q", "-am",
              "Trivial\n\nOrigin: vendor\nRisk: none\nProbe: defines vllm/a.py::X\n")
    export.export(tree, repo / "patches")

    # a lock edited against the wheel's own Requires-Dist is refused, nothing written
    lock = repo / "locks" / "runtime-x86_64.txt"
    good = lock.read_text()
    torch = re.search(r"^torch==(\S+) \\$", good, re.M)[1]  # the pin's (a rebase moves it)
    lock.write_text(good.replace(f"\ntorch=={torch} \\", "\ntorch==2.9.0 \\"))
    with pytest.raises(OverlayError, match=r"torch==2.9.0: does not satisfy .*make lock"):
        overlay_mode.build_overlay_wheel("x86_64", repo / "wheelhouse", repo / "patches", repo)
    assert not list((repo / "wheelhouse").glob("*.whl"))
    lock.write_text(good)

    wheel = overlay_mode.build_overlay_wheel("x86_64", repo / "wheelhouse", repo / "patches", repo)

    assert wheel.name == f"vllm-{the_pin.overlay_version}-cp38-abi3-manylinux_2_31_x86_64.whl"
    upstream = fetch.fetch(the_pin.wheel("x86_64"))
    with zipfile.ZipFile(wheel) as new, zipfile.ZipFile(upstream) as old:
        assert len(old.namelist()) > 1000  # a real vLLM wheel (2116 files in 0.19.1)
        assert set(new.namelist()) - {n.replace(f"vllm-{the_pin.upstream_version}.dist-info/",
                                                f"vllm-{the_pin.overlay_version}.dist-info/")
                                      for n in old.namelist()} == {
            f"vllm-{the_pin.overlay_version}.dist-info/sboms/vllm.cdx.json"}
        assert new.read(TARGET).endswith(b"# overlay test marker\n")
        assert new.getinfo("vllm/_C.abi3.so").CRC == old.getinfo("vllm/_C.abi3.so").CRC
    manifest = (repo / "wheelhouse" / "manifest-x86_64.json").read_text()
    assert f'"{TARGET}": "M"' in manifest
