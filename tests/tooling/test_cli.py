"""The command line (vllm_overlay/cli.py): each command's driver is named once, and a
command loads only its own driver."""

import argparse
import importlib
import subprocess
import sys

from vllm_overlay import cli
from vllm_overlay.common.paths import REPO


def test_each_driver_registers_the_command_it_is_listed_under():
    for name, module in cli.COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"vllm_overlay.commands.{module}").add(sub)
        assert list(sub.choices) == [name], module


def test_a_build_loads_neither_the_status_nor_the_rebase_code():
    code = ("import sys; from vllm_overlay import cli\n"
            "try:\n    cli.main(['wheel', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(*sorted(m for m in sys.modules if m.startswith('vllm_overlay.')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    assert "vllm_overlay.commands.wheel" in loaded  # the control: what it did load
    assert not {"vllm_overlay.upstream.status", "vllm_overlay.upstream.rebase",
                "vllm_overlay.publishing.publish", "vllm_overlay.commands.status"} & set(loaded)


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "vllm_overlay", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in cli.COMMANDS)
