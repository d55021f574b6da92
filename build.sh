#!/usr/bin/env bash
# The one entry point that make, CI and the Dockerfile call:
#   ./build.sh <command> [options]     (./build.sh --help lists the commands)
# The pipeline itself lives in the stdlib-only Python package vllm_overlay/.
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python3}" -m vllm_overlay "$@"
