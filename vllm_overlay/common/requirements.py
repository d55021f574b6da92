"""requirements.txt text: the one parser for build, runtime and tools requirements."""

import re


def requirement_lines(text: str) -> list[str]:
    """Requirement lines without comments and blanks ('-r x' lines kept as they are)."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0]
        line = "" if line.lstrip().startswith("#") else line.strip()
        if line:
            lines.append(line)
    return lines


def requirement_names(text: str) -> list[str]:
    """Only the requirements themselves: option lines (-r, --extra-index-url ...) left out."""
    return [line for line in requirement_lines(text) if not line.startswith("-")]


def normalize_name(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()
