"""The user's documentation is self-contained: README.md, docs/, config/README.md, benchmarks/*.md and the
notebooks point only at files of the repository — every relative link resolves to a file in it, no path
climbs out of it, and nothing names the project's private notes (a clone has none of them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "config" / "README.md",
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("benchmarks/*.md"),
    ]
    + list(ROOT.glob("notebooks/*.ipynb"))
)
# Names of files that live outside the repository (the project's notes and specification)
OUTSIDE = re.compile(r"\.\./shared|\bshared/SPEC|\bSPEC\.md\b|(?<![\w/.-])notes/|/work/")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|\b(?:href|src)=\"([^\"]+)\"")
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")


def text_of(path: Path) -> str:
    """A Markdown file, or every cell of a notebook (Markdown and code)."""
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
    return path.read_text()


def inside(target: Path) -> bool:
    return target.resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(path):
    text = text_of(path)
    assert not OUTSIDE.findall(text), f"{path.name} names files outside the repository"
    for match in LINK.finditer(text):
        link = (match.group(1) or match.group(2)).split("#")[0]
        if not link or re.match(r"[a-z]+:", link):  # an anchor, http(s), mailto
            continue
        assert not link.startswith("/"), f"{path.name}: absolute path {link}"
        target = path.parent / link
        assert inside(target), f"{path.name}: {link} leaves the repository"
        assert target.exists(), f"{path.name}: {link} does not exist"
    for climb in CLIMB.findall(text):
        assert inside(path.parent / climb), f"{path.name}: {climb} leaves the repository"


def test_the_check_catches_what_it_should(tmp_path):
    assert OUTSIDE.search("see ../shared/SPEC.md") and OUTSIDE.search("columns in notes/contracts.md")
    assert not OUTSIDE.search("cache_dir: /shared/semtok-weights, or results/notes.txt")
    assert [m.group(1) for m in LINK.finditer("[a](docs/METHOD.md#x) and [b](https://x.org)")] == [
        "docs/METHOD.md#x",
        "https://x.org",
    ]
    assert not inside(ROOT / "docs" / "../../elsewhere") and inside(ROOT / "notebooks" / "../results")
