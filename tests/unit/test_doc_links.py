"""Every link in the README and docs/ leads somewhere: the file exists, and the anchor names one of its headings.

Links to the demo's own services (``http://127.0.0.1:...``) are opened on the
running demo by ``tests/integration/test_demo.py``; other web addresses are
left to their owners.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
"""A Markdown inline link's target: ``[text](target)``."""
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens.

    Example:
        >>> sorted(_slugs("## Verdicts, revisions and the verdicts topic\\n### `replay --part`: splitting"))
        ['replay---part-splitting', 'verdicts-revisions-and-the-verdicts-topic']
    """
    return _slugs(FENCE.sub("", document.read_text(encoding="utf-8")))


def _slugs(text: str) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 1
        while candidate in found:  # a repeated heading gets -1, -2, ...
            candidate, n = f"{slug}-{n}", n + 1
        found.add(candidate)
    return found


def links(document: Path) -> list[str]:
    """The targets of a document's links outside code blocks."""
    return LINK.findall(FENCE.sub("", document.read_text(encoding="utf-8")))


def local_links() -> list[tuple[str, str]]:
    return [
        (str(document.relative_to(REPO)), target)
        for document in DOCUMENTS
        for target in links(document)
        if not re.match(r"[a-z]+:", target)
    ]


def test_the_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"README.md has {lines} lines; move detail to docs/"


def test_documents_link_to_each_other() -> None:
    """A guard on the parametrised test below: an empty list of links would pass it."""
    assert len(local_links()) > 40


@pytest.mark.parametrize(("document", "target"), local_links())
def test_every_local_link_resolves(document: str, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    source = REPO / document
    linked = (source.parent / path_part).resolve() if path_part else source
    assert linked.exists(), f"{document}: {target}: {linked.relative_to(REPO)} does not exist"
    if anchor:
        assert linked.suffix == ".md", f"{document}: {target}: an anchor into a file that is not Markdown"
        assert anchor in anchors(linked), f"{document}: {target}: no heading of {path_part or document} makes #{anchor}"
