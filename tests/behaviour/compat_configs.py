"""Load CompilationConfigs the ways a user gives them and print what they mean, as JSON.

Run by test_config_compat.py with the python of each wheel's venv (pristine 0.19.1 and
ours): ``python compat_configs.py < configs.json``. Standard library + vLLM (and its
PyYAML) only, so it runs against either wheel. Per config, one entry per way (WAYS),
each either the meaning (the fields a 0.19.1 config can set, read back through 0.19.1's
attribute names) or ``{"error": "<exception type>"}``.

Ways: ``kwargs`` CompilationConfig(**config); ``cli`` --compilation-config <json>;
``dotted`` -cc.<key>=<value> per key; ``yaml`` a --config YAML file with a
compilation-config mapping; ``replace`` / ``utils_replace`` dataclasses.replace and
vllm.config.utils.replace of a config that already sets the item limit (16) and the
capture sizes (as VllmConfig sets them; a bare CompilationConfig() does not survive
replace() on 0.19.1); ``deepcopy`` / ``pickle`` round trips of the kwargs config.
"""

import copy
import dataclasses
import json
import pickle
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

    def from_dotted(data):
        argv = [f"-cc.{k}={v if isinstance(v, str) else json.dumps(v)}"
                for k, v in data.items()]
        return parser.parse_args(argv).compilation_config

    def from_yaml(data):
        import tempfile

        import yaml

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"compilation-config": data}, f)
        return parser.parse_args(["--config", f.name]).compilation_config

    def base():
        return CompilationConfig(
            cudagraph_capture_sizes=[1, 2, 4],
            encoder_cudagraph_max_images_per_batch=16,
        )

    def replaced(replace, data):
        return replace(base(), **data)

    from vllm.config.utils import replace as utils_replace

    results = []
    for data in json.load(sys.stdin):
        results.append({
            "kwargs": load(lambda: CompilationConfig(**data)),
            "cli": load(lambda: from_cli(data)),
            "dotted": load(lambda: from_dotted(data)),
            "yaml": load(lambda: from_yaml(data)),
            "replace": load(lambda: replaced(dataclasses.replace, data)),
            "utils_replace": load(lambda: replaced(utils_replace, data)),
            "deepcopy": load(lambda: copy.deepcopy(CompilationConfig(**data))),
            "pickle": load(lambda: pickle.loads(pickle.dumps(CompilationConfig(**data)))),
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
