"""Tooling for the vLLM multimodal overlay: pinned upstream + patch series -> wheels.

The pipeline, one subpackage per part, one module per stage (README: Pin and layout):
    common/ (pin, series, git, fs, http, wheelfile) ->
    build/ (fetch -> apply -> overlay -> verify -> wheelhouse) -> dist/ (index, publish,
    docker); upstream/ (releases, probes, status, bisect); testing/ (make test);
    commands/ (one driver per CLI command, wired by cli.py)
"""
