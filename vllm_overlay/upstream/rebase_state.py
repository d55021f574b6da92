"""The typed state of a rebase (upstream/rebase.py): JSON only at the boundary.

`RebaseState` is work/rebase/state.json, `Placed` one patch's outcome in it (and in the
log reports/rebase-<from>-<to>.json). The file format is the dicts the state was before
it had types: the same keys, the same words for the results (`RESULT`).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.gittree import Outcome

WORK = Path("work") / "rebase"  # relative to the repository
STATE = "state.json"

# How a rebase words an outcome in its state file, its log and its messages.
RESULT = {Outcome.CLEAN: "applied-clean", Outcome.OFFSET: "applied-clean",
          Outcome.THREE_WAY: "applied-3way", Outcome.UPSTREAM: "dropped-upstream",
          Outcome.FLAGGED: "flagged", Outcome.CONFLICT: "conflict",
          Outcome.DELETED: "deleted", Outcome.PENDING: "pending"}
_FROM_WORD = {word: outcome for outcome, word in reversed(RESULT.items())}


@dataclass
class Placed:
    """How one patch was placed on the target's tree."""

    patch: str
    result: Outcome
    detail: str = ""
    subject: str = ""
    probes: list[dict] = field(default_factory=list)
    applied_upstream_header: str | None = None
    files: list[str] = field(default_factory=list)
    hunks: list[str] = field(default_factory=list)
    unmerged: list[str] = field(default_factory=list)
    deleted: list[str] | None = None           # (only when upstream deleted a file)
    release: str | None = None                 # first release with it (dropped, flagged)
    moved_to: dict[str, list[str]] | None = None  # deleted file -> where drift finds it
    resolution: str | None = None              # what the human did at a stop

    @property
    def word(self) -> str:
        return RESULT[self.result]

    def to_json(self) -> dict:
        data = {"patch": self.patch, "subject": self.subject, "probes": self.probes,
                "applied_upstream_header": self.applied_upstream_header,
                "files": self.files, "hunks": self.hunks, "unmerged": self.unmerged,
                "result": self.word, "detail": self.detail}
        for key in ("deleted", "release", "moved_to", "resolution"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Placed":
        return cls(data["patch"], _FROM_WORD[data["result"]], data.get("detail", ""),
                   data.get("subject", ""), data.get("probes", []),
                   data.get("applied_upstream_header"), data.get("files", []),
                   data.get("hunks", []), data.get("unmerged", []), data.get("deleted"),
                   data.get("release"), data.get("moved_to"), data.get("resolution"))


@dataclass
class Mark:
    """A patch and the tree's HEAD before it was placed (being placed, or stopped at)."""

    patch: str
    head: str

    def to_json(self) -> dict:
        return {"patch": self.patch, "head": self.head}

    @classmethod
    def from_json(cls, data: dict | None) -> "Mark | None":
        return None if data is None else cls(data["patch"], data["head"])


@dataclass
class RebaseState:
    """Where a rebase from `from_` to `to` is (work/rebase/state.json)."""

    from_: str
    to: str
    version_from: str
    version: str
    lock: dict
    series_sha256: str
    probes: dict[str, list[dict]]
    first_release: dict[str, str]
    notes: list[str]
    todo: list[str]
    done: list[Placed] = field(default_factory=list)
    stopped: Mark | None = None
    current: Mark | None = None
    phase: str | None = None          # None, then "writing", "locking"
    checks: list[dict] | None = None  # the merged tree's problems (None: not checked yet)
    complete: bool = False

    @staticmethod
    def work(repo: Path) -> Path:
        return repo / WORK

    def tree(self, repo: Path) -> Path:
        """The target's work tree: work/rebase/vllm-<to>."""
        return self.work(repo) / f"vllm-{self.to}"

    def to_json(self) -> dict:
        data = {"from": self.from_, "to": self.to, "version_from": self.version_from,
                "version": self.version, "lock": self.lock,
                "series_sha256": self.series_sha256, "probes": self.probes,
                "first_release": self.first_release, "notes": self.notes,
                "todo": self.todo, "done": [o.to_json() for o in self.done],
                "stopped": self.stopped and self.stopped.to_json(),
                "current": self.current and self.current.to_json()}
        if self.phase is not None:
            data["phase"] = self.phase
        if self.checks is not None:
            data["checks"] = self.checks
        if self.complete:
            data["complete"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RebaseState":
        return cls(data["from"], data["to"], data["version_from"], data["version"],
                   data["lock"], data["series_sha256"], data["probes"],
                   data["first_release"], data["notes"], data["todo"],
                   [Placed.from_json(o) for o in data["done"]],
                   Mark.from_json(data.get("stopped")), Mark.from_json(data.get("current")),
                   data.get("phase"), data.get("checks"), data.get("complete", False))

    @classmethod
    def load(cls, repo: Path) -> "RebaseState":
        return cls.from_json(json.loads((cls.work(repo) / STATE).read_text()))

    def save(self, repo: Path) -> None:
        atomic_write(self.work(repo) / STATE, json.dumps(self.to_json(), indent=1))
