"""Is the installed vLLM ours? Version and one symbol that only the patch series adds.

SERIES_SYMBOL is the one place that names that symbol: the Docker build, the publish
round trip test and anything else that asks "is the series in there?" use it. It is a
field that patches 0002/0004 add to CompilationConfig (upstream 0.19.1 has none).

Stdlib only and runnable as a plain script (the Docker build runs it inside the image,
where this package is not installed):
    python3 image_check.py --version 0.19.1+mmcg.1 [--import]
Without --import it reads the installed files only (no heavy runtime import); with it,
it also imports vllm and the class, as the image's Python will.
"""

import argparse
import ast
import dataclasses
import importlib
import importlib.metadata
import sys
from pathlib import Path

# (file in the wheel, class, field): the field the series adds; upstream 0.19.1 lacks it.
SERIES_SYMBOL = ("vllm/config/compilation.py", "CompilationConfig",
                 "encoder_cudagraph_max_frames_per_batch")


def symbol_name() -> str:
    path, cls, field = SERIES_SYMBOL
    return f"{path[:-3].replace('/', '.')}.{cls}.{field}"


def class_fields(source: str, cls: str) -> set[str]:
    """Names a class body declares (annotated or assigned), read with ast."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            names = set()
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    names.add(stmt.target.id)
                elif isinstance(stmt, ast.Assign):
                    names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
            return names
    return set()


def has_symbol_in_source(source: str) -> bool:
    _, cls, field = SERIES_SYMBOL
    return field in class_fields(source, cls)


def installed_problems(site_dir: Path, version: str) -> list[str]:
    """Check an installed vllm by its files: dist-info version, _version.py, the symbol."""
    problems = []
    infos = sorted(site_dir.glob("vllm-*.dist-info"))
    if [i.name for i in infos] != [f"vllm-{version}.dist-info"]:
        problems.append(f"{site_dir}: expected only vllm-{version}.dist-info, found "
                        f"{[i.name for i in infos] or 'none'}")
    else:
        meta = (infos[0] / "METADATA").read_text()
        if f"\nVersion: {version}\n" not in meta:
            problems.append(f"{infos[0]}/METADATA does not say Version: {version}")
    version_py = site_dir / "vllm" / "_version.py"
    if not version_py.is_file() or repr(version) not in version_py.read_text():
        problems.append(f"{version_py} does not set __version__ = {version!r}")
    symbol_file = site_dir / SERIES_SYMBOL[0]
    if not symbol_file.is_file() or not has_symbol_in_source(symbol_file.read_text()):
        problems.append(f"{symbol_file}: no {symbol_name()} (the patch series is not in it)")
    return problems


def imported_problems(version: str) -> list[str]:
    """The same questions asked of the importable runtime (needs vllm's dependencies)."""
    import vllm

    problems = []
    if vllm.__version__ != version:
        problems.append(f"vllm.__version__ is {vllm.__version__!r}, expected {version!r} "
                        f"({vllm.__file__})")
    path, cls_name, field = SERIES_SYMBOL
    cls = getattr(importlib.import_module(path[:-3].replace("/", ".")), cls_name)
    names = ({f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls)
             else set(getattr(cls, "model_fields", {})) | set(dir(cls)))
    if field not in names:
        problems.append(f"{symbol_name()} is missing from the imported class")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", required=True, help="the overlay version, e.g. 0.19.1+mmcg.1")
    parser.add_argument("--import", dest="do_import", action="store_true",
                        help="also import vllm and the class")
    args = parser.parse_args(argv)
    dist = importlib.metadata.distribution("vllm")
    site_dir = Path(dist.locate_file(""))
    problems = installed_problems(site_dir, args.version)
    if args.do_import and not problems:
        problems = imported_problems(args.version)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"image-check: vllm {args.version} in {site_dir}, with {symbol_name()}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
