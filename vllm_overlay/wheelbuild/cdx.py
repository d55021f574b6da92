"""CycloneDX 1.6 documents with cyclonedx-python-lib; runs in the supply venv only.

The stdlib-only pipeline (wheelbuild/sbom.py) gathers the facts and runs this module in the cached
venv of requirements-supply.lock:
    python -m vllm_overlay.wheelbuild.cdx render   < facts.json  > sbom.cdx.json  (schema-checked)
    python -m vllm_overlay.wheelbuild.cdx validate < sbom.cdx.json   (exit 3, supplyenv.INVALID, and the errors if invalid)
Every bom-ref is given explicitly (the library would draw random ones), the serial number
and timestamp come from the facts, so the same facts give the same bytes.
"""

import datetime
import json
import sys
import uuid

from cyclonedx.model import AttachedText, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import (Component, ComponentScope, ComponentType, Diff, Patch,
                                       PatchClassification, Pedigree)
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.issue import IssueClassification, IssueType, IssueTypeSource
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vllm_overlay.wheelbuild.supplyenv import INVALID

PROP = "vllm-overlay:"  # our property namespace


def sha256(digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=digest)


def issue(url: str, kind: IssueClassification) -> IssueType:
    """A `resolves` entry for an upstream GitHub pull request or issue URL (Origin, Bug, Forwarded)."""
    repo, _, number = url.removeprefix("https://github.com/").partition("/pull/")
    if not number:
        repo, _, number = url.removeprefix("https://github.com/").partition("/issues/")
    return IssueType(type=kind, id=number.strip("/") or url, name=f"{repo}#{number}",
                     source=IssueTypeSource(name=repo, url=XsUri(f"https://github.com/{repo}")),
                     references=[XsUri(url)])


def patch_entry(patch: dict) -> Patch:
    """backport: an upstream change rewritten for the pin; unofficial: ours (vendor)."""
    origin = patch["origin"]
    backport = origin.startswith(("upstream", "backport"))
    resolves = [issue(u, IssueClassification.ENHANCEMENT) for u in patch["origin_urls"]]
    resolves += [issue(u, IssueClassification.DEFECT) for u in patch["bugs"]]
    diff = Diff(text=AttachedText(content=patch["text"], content_type="text/x-diff"),
                url=XsUri(f"patches/{patch['name']}"))
    return Patch(type=PatchClassification.BACKPORT if backport else PatchClassification.UNOFFICIAL,
                 diff=diff, resolves=resolves)


def dependencies(facts: dict) -> list[Component]:
    """Requires-Dist without extras whose markers hold on the wheel's platform, at the
    version the runtime lock pins (the one the tests ran with)."""
    env = {"platform_machine": facts["arch"], "python_version": facts["python_version"],
           "extra": ""}
    locked = {canonicalize_name(k): v for k, v in facts["locked"].items()}
    out = []
    for line in facts["requires_dist"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        version = locked.get(name)
        purl = PackageURL("pypi", name=name, version=version)
        out.append(Component(name=name, version=version, purl=purl, bom_ref=purl.to_string(),
                             scope=ComponentScope.REQUIRED,
                             properties=[Property(name=PROP + "requires-dist", value=line)]))
    return out


def build(facts: dict) -> Bom:
    up = facts["upstream"]
    ancestors = [Component(name="vllm", version=up["version"], bom_ref=f"upstream:{a['filename']}",
                           purl=PackageURL("pypi", name="vllm", version=up["version"],
                                           qualifiers={"file_name": a["filename"]}),
                           hashes=[sha256(a["sha256"])], description=f"upstream {a['kind']}")
                 for a in up["artifacts"]]
    series = facts["series"]
    notes = (f"Upstream vLLM {up['version']} plus the patch series of sha256 {series['sha256']} "
             f"(patches/series, {len(series['patches'])} patches, in order: "
             + "; ".join(f"{p['name']} sha256 {p['sha256']}" for p in series["patches"])
             + "). The hashes of the wheel that carries this document are in the wheelhouse's "
               "SHA256SUMS and the in-toto provenance statement beside the wheel.")
    files = [Component(type=ComponentType.FILE, name=f["path"], bom_ref=f"file:{f['path']}",
                       hashes=[sha256(f["sha256"])], description=f"changed by {f['patches']}")
             for f in facts["files"]]
    purl = PackageURL("pypi", name="vllm", version=facts["version"])
    deps = dependencies(facts)
    main = Component(
        name="vllm", version=facts["version"], purl=purl, bom_ref=purl.to_string(),
        type=ComponentType.LIBRARY,
        description=f"vLLM {up['version']} with the multimodal CUDA-graph overlay series "
                    f"({facts['arch']} wheel)",
        pedigree=Pedigree(ancestors=ancestors, notes=notes,
                          patches=[patch_entry(p) for p in series["patches"]]),
        components=files,
        properties=[Property(name=PROP + "series-sha256", value=series["sha256"]),
                    Property(name=PROP + "runtime-lock", value=facts["lock"]["file"]),
                    Property(name=PROP + "runtime-lock-sha256", value=facts["lock"]["sha256"]),
                    *(Property(name=PROP + f"patch:{p['name']}", value=p["sha256"])
                      for p in series["patches"])])
    stamp = datetime.datetime.fromtimestamp(facts["epoch"], datetime.UTC)
    bom = Bom(serial_number=uuid.UUID(facts["serial"]),
              metadata=BomMetaData(component=main, timestamp=stamp), components=deps)
    bom.dependencies.add(Dependency(ref=main.bom_ref,
                                    dependencies=[Dependency(ref=d.bom_ref) for d in deps]))
    for dep in deps:
        bom.dependencies.add(Dependency(ref=dep.bom_ref))
    return bom


def render(facts: dict) -> str:
    return JsonV1Dot6(build(facts)).output_as_string(indent=2) + "\n"


def validate(text: str) -> list[str]:
    """Schema errors, one line each ('<JSON path>: <message>'); empty when valid."""
    try:
        json.loads(text)
    except ValueError as exc:  # the validator raises on it: a verdict, not a crash
        return [f"not JSON: {exc}"]
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return ["/".join(map(str, e.data.absolute_path)) + f": {e.data.message}"
            for e in errors or ()]


def main(argv: list[str]) -> int:
    data = sys.stdin.read()
    if argv not in (["render"], ["validate"]):
        print("usage: python -m vllm_overlay.wheelbuild.cdx render|validate < input", file=sys.stderr)
        return 2
    document = render(json.loads(data)) if argv == ["render"] else data
    errors = validate(document)  # a rendered document is checked before anyone sees it
    for error in errors:
        print(error, file=sys.stderr)
    if not errors and argv == ["render"]:
        sys.stdout.write(document)
    return INVALID if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
