"""Release notes per overlay version: `make changelog` -> wheelhouse/CHANGES-<VERSION>.md.

Compares this version's release record (the pin, each patch with its sha256 and trailers,
the runtime lock) with the previous version's: the newest releases/<version>.json below
VERSION, or PREVIOUS=<file> (such a record, or a wheelhouse manifest-<arch>.json, which
has the same keys). Writes this version's record to releases/, the notes to the wheelhouse,
and the same notes at the top of CHANGELOG.md's list of versions, newest first (replacing
an older entry for this version), so re-running it changes nothing.
"""

import json
import re
from pathlib import Path

from vllm_overlay.wheelbuild import constraints
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.paths import REPO

START, END = "<!-- changelog:start -->", "<!-- changelog:end -->"
CHANGELOG = "CHANGELOG.md"  # the entries sit between START and END
_URL_RE = re.compile(r"https://github\.com/\S+/(?:pull|issues)/\d+")


def record(arch: str = "x86_64", repo: Path = REPO) -> dict:
    """This version's release record (the keys of a wheelhouse manifest that matter here)."""
    the_pin = pin.load(repo)
    patches_dir = repo / "patches"
    patches = series.read_series(patches_dir)
    return {
        "version": the_pin.overlay_version,
        "upstream": {"version": the_pin.upstream_version},
        "series": {"sha256": series.series_digest(patches, patches_dir),
                   "patches": [{"name": p.name, "sha256": p.sha256(), "subject": p.subject,
                                **{k.lower().replace("-", "_"): v[0] if len(v) == 1 else v
                                   for k, v in p.trailers.items()}} for p in patches]},
        "runtime_lock": constraints.read_lock(constraints.runtime_lock(arch, repo))[1],
    }


def _version_key(version: str) -> tuple:
    """Orders overlay versions as PEP 440 does: the public part, then the local part (none
    first), where a numeric segment sorts after a word (0.19.1+1 > 0.19.1+mmcg.1)."""
    public, _, local = version.partition("+")

    def parts(text: str) -> tuple:
        return tuple((1, int(x), "") if x.isdigit() else (0, 0, x)
                     for x in re.split(r"[.\-_]", text) if x)
    return parts(public), parts(local)


def _not_a_record(data) -> str | None:
    """What makes `data` no release record (or manifest), or None: the keys render reads."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("version"), str) or not data["version"]:
        return "no \"version\" string"
    if not isinstance(data.get("upstream"), dict) or \
            not isinstance(data["upstream"].get("version"), str):
        return "no \"upstream\": {\"version\": ...}"
    patches = data.get("series", {}).get("patches") if isinstance(data.get("series"), dict) \
        else None
    if not isinstance(patches, list):
        return "no \"series\": {\"patches\": [...]}"
    for number, patch in enumerate(patches, 1):
        if not isinstance(patch, dict) or not all(isinstance(patch.get(k), str)
                                                  for k in ("name", "sha256")):
            return f"series patch {number} has no \"name\" and \"sha256\" strings"
    lock = data.get("runtime_lock", {})
    if not isinstance(lock, dict) or not all(isinstance(v, str) for v in lock.values()):
        return "\"runtime_lock\" is not a {package: version} object"
    return None


def load_record(path: Path) -> dict:
    """A release record or wheelhouse manifest, checked; else one error naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OverlayError(f"{path}: not a release record or manifest: {exc}") from exc
    if problem := _not_a_record(data):
        raise OverlayError(f"{path}: not a release record or manifest: {problem}")
    return data


def previous_record(version: str, repo: Path = REPO) -> tuple[Path | None, dict | None]:
    """The newest releases/*.json of an older version (None, None for the first one)."""
    found = []
    for path in sorted((repo / "releases").glob("*.json")):
        data = load_record(path)
        if _version_key(data["version"]) < _version_key(version):
            found.append((_version_key(data["version"]), path.name, path, data))
    return max(found)[2:] if found else (None, None)


def _urls(patch: dict) -> list[str]:
    values = [patch.get(k) for k in ("origin", "bug", "forwarded")]
    words = " ".join(v if isinstance(v, str) else " ".join(v) for v in values if v)
    return _URL_RE.findall(words)


def _release_key(version: str) -> tuple | None:
    try:
        return tuple(int(x) for x in re.match(r"^\d+(?:\.\d+)*", version)[0].split("."))
    except (TypeError, ValueError):
        return None


def rebase_log(repo: Path, old: dict | None, new: dict) -> dict:
    """The log `make rebase` wrote for this pin move (reports/rebase-<from>-<to>.json), its
    patches by subject; {} when there is none (no move, or another clone)."""
    if old is None or old["upstream"]["version"] == new["upstream"]["version"]:
        return {}
    path = repo / "reports" / f"rebase-{old['upstream']['version']}-" \
                              f"{new['upstream']['version']}.json"
    try:
        return {o.get("subject"): o for o in json.loads(path.read_text())["patches"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _match(before: dict[str, dict], after: dict[str, dict]) -> dict[str, str]:
    """new name -> old name: the same name, else the same subject (a rebase renumbers the
    series: 0005 becomes 0001 when 0001-0004 are dropped)."""
    out = {n: n for n in after if n in before}
    by_subject = {p.get("subject"): n for n, p in before.items() if n not in out.values()}
    for n, p in after.items():
        if n not in out and p.get("subject") in by_subject:
            out[n] = by_subject.pop(p["subject"])
    return out


def _why_dropped(patch: dict, log: dict, upstream: str) -> str | None:
    """Why a patch the new series lacks is gone, when upstream has it; else None."""
    outcome = log.get(patch.get("subject"), {})
    if outcome.get("result") == "dropped-upstream":
        return f"upstream in {outcome.get('release') or upstream} (the rebase found it there)"
    header = patch.get("applied_upstream")
    if isinstance(header, str) and outcome.get("result") in (None, "dropped-upstream") and \
            _release_key(header) and _release_key(upstream) and \
            _release_key(header) <= _release_key(upstream):
        return f"upstream since {header} (its Applied-Upstream header)"
    return None


def render(new: dict, old: dict | None, old_name: str | None, log: dict | None = None) -> str:
    log = log or {}
    lines = [f"## {new['version']}", ""]
    since = f"since {old['version']} ({old_name})" if old is not None else \
        "first overlay version"
    lines += [f"Upstream vLLM {new['upstream']['version']}, patch series sha256 "
              f"`{new['series']['sha256'][:16]}`; {since}.", ""]
    before = {p["name"]: p for p in (old or {}).get("series", {}).get("patches", [])}
    after = {p["name"]: p for p in new["series"]["patches"]}
    matched = _match(before, after)
    gone = [n for n in before if n not in matched.values()]
    upstreamed = {n: why for n in gone
                  if (why := _why_dropped(before[n], log, new["upstream"]["version"]))}
    if old is not None and old["upstream"]["version"] != new["upstream"]["version"]:
        carried = len(matched)
        lines += [f"- **Upstream pin**: {old['upstream']['version']} -> "
                  f"{new['upstream']['version']}: {len(upstreamed)} patch(es) dropped because "
                  f"upstream has them, {carried} carried over "
                  f"({sum(before[o]['sha256'] != after[n]['sha256'] for n, o in matched.items())}"
                  f" rebased), {len(gone) - len(upstreamed)} dropped otherwise, "
                  f"{len(after) - carried} added", ""]

    def note(name: str) -> str:
        outcome = log.get(after[name].get("subject"), {})
        bits = [f"was `{matched[name]}`"] if matched.get(name, name) != name else []
        if outcome.get("result"):
            bits.append(f"rebase: {outcome['result']}"
                        + (f", {outcome['resolution']}" if outcome.get("resolution") else ""))
        return f"; {', '.join(bits)}" if bits else ""

    groups = {"Patches added": [n for n in after if n not in matched],
              "Patches changed": [n for n, o in matched.items()
                                  if before[o]["sha256"] != after[n]["sha256"]],
              "Patches dropped upstream": list(upstreamed),
              "Patches dropped": [n for n in gone if n not in upstreamed]}
    for title, names in groups.items():
        if title == "Patches dropped upstream" and not names:
            continue
        lines.append(f"### {title} ({len(names)})")
        source = before if title.startswith("Patches dropped") else after
        for n in names:
            line = f"- `{n}`: {source[n].get('subject', '?')} (Origin: {source[n].get('origin', '?')})"
            if title == "Patches dropped upstream":
                line += f": {upstreamed[n]}"
            elif title == "Patches dropped":
                outcome = log.get(source[n].get("subject"), {})
                if outcome.get("resolution"):
                    line += f": {outcome['resolution']} in the rebase"
            else:
                line += note(n)
            lines.append(line)
        if not names:
            lines.append("- none")
        lines.append("")
    lines.append("### Upstream changes carried")
    carried = [(n, url) for n, p in after.items() for url in _urls(p)]
    lines += [f"- {url} ({n.split('-', 1)[0]}"
              f"{', upstream in ' + after[n]['applied_upstream'] if after[n].get('applied_upstream') else ''})"
              for n, url in carried] or ["- none"]
    lines += ["", "### Runtime dependency changes (locks/runtime-<arch>.txt)"]
    if old is None or "runtime_lock" not in old:
        lines.append("- no previous lock to compare: "
                     f"{len(new['runtime_lock'])} packages pinned with hashes")
    else:
        was, now = old["runtime_lock"], new["runtime_lock"]
        changes = [f"- {n}: {was.get(n, '(new)')} -> {now.get(n, '(dropped)')}"
                   for n in sorted(set(was) | set(now)) if was.get(n) != now.get(n)]
        lines += changes or ["- none"]
    return "\n".join(lines) + "\n"


def changelog_with(changes: Path, notes: str, version: str) -> str:
    """CHANGELOG.md's text with `notes` as this version's entry."""
    text = changes.read_text()
    if START not in text or END not in text:
        raise OverlayError(f"{changes}: no changelog section ({START} ... {END})")
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    demoted = re.sub(r"(?m)^(#+) ", r"#\1 ", notes).strip()  # below the section's heading
    entries = [e.strip() for e in re.split(r"(?m)^(?=### )", body) if e.strip()]
    entries = [e for e in entries if not e.startswith(f"### {version}\n")]
    return f"{head}{START}\n" + "\n\n".join([demoted, *entries]) + f"\n{END}{tail}"


def make_changelog(arch: str = "x86_64", previous: Path | None = None, repo: Path = REPO,
                   wheelhouse: Path | None = None) -> Path:
    new = record(arch, repo)
    if previous is not None:
        old, old_name = load_record(previous), previous.name
    else:
        path, old = previous_record(new["version"], repo)
        old_name = path.name if path else None
    notes = render(new, old, old_name, rebase_log(repo, old, new))
    wheelhouse = wheelhouse or repo / "wheelhouse"
    out = wheelhouse / f"CHANGES-{new['version']}.md"
    changes = changelog_with(repo / CHANGELOG, notes, new["version"])  # fails before any write
    for folder in (wheelhouse, repo / "releases"):
        folder.mkdir(parents=True, exist_ok=True)
    atomic_write(out, notes)
    atomic_write(repo / "releases" / f"{new['version']}.json", json.dumps(new, indent=2) + "\n")
    atomic_write(repo / CHANGELOG, changes)
    return out
