"""Tooling for the vLLM multimodal overlay: pinned upstream + patch series -> wheels.

The pipeline, one subpackage per part (docs/layout.md, the layer rule in
tests/tooling/test_imports.py): common/ (the shared layer: pin, series, git, fs, http,
wheelfile, ...); wheelbuild/ (make wheel: fetch -> apply -> overlay -> verify -> wheelhouse,
and the files beside the wheel); publishing/ (index, publish, docker); testing/ (make
test); upstream/ (releases, probes, status, bisect, drift, rebase); commands/ (one driver
per CLI command, wired by cli.py)
"""
