"""Load CompilationConfigs the ways a user gives them and print what they mean, as JSON.

Run by test_config_compat.py with the python of each wheel's venv (pristine 0.19.1 and
ours): ``python compat_configs.py < configs.json``. Standard library + vLLM only, so it
runs against either wheel. Per config: ``{"kwargs": ..., "cli": ...}``, each either the
meaning (the fields a 0.19.1 config can set, read back through 0.19.1's attribute names)
or ``{"error": "<exception type>"}``.
"""

import json
import sys

# 0.19.1's encoder CUDA graph keys, read back by their 0.19.1 attribute names.
FIELDS = (
    "cudagraph_mm_encoder",
    "encoder_cudagraph_token_budgets",
    "encoder_cudagraph_max_images_per_batch",
)


def meaning(config) -> dict:
    return {name: getattr(config, name) for name in FIELDS}


def load(build) -> dict:
    try:
        return meaning(build())
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the type is the result
        return {"error": type(exc).__name__}


def main() -> None:
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()  # EngineArgs builds a DeviceConfig

    from vllm.config import CompilationConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())

    def from_cli(data):
        # argparse exits (SystemExit) on a value it cannot convert
        args = parser.parse_args(["--compilation-config", json.dumps(data)])
        return args.compilation_config

    results = []
    for data in json.load(sys.stdin):
        results.append({
            "kwargs": load(lambda: CompilationConfig(**data)),
            "cli": load(lambda: from_cli(data)),
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
