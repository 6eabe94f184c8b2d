"""The user docs: every relative link and #anchor resolves, the README stays short, no project-history words."""

import json
import re
from pathlib import Path

import pytest
from helpers import REPO

README_MAX_LINES = 200


PAGES = sorted([REPO / "README.md", REPO / "export" / "README.md", *(REPO / "docs").glob("*.md")])


# Words about how the project was made, which mean nothing to its users.
HISTORY_WORDS = re.compile(
    r"\bissue\s*#?\d+|\bsessions?\b|\bsketch(es)?\b|\b(was|were|not) tuned\b",
    re.IGNORECASE,
)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


FENCE = re.compile(r"^ {0,3}(```|~~~)")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation gone, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, numbered like GitHub's when a heading repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file, outside code blocks and inline code."""
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found += LINK.findall(re.sub(r"`[^`]*`", "", line))
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file, or heading anchor, does not exist."""
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_the_pages_exist():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    for name in ("performance", "deployment", "reliability", "design", "distributed"):
        assert f"docs/{name}.md" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_catches_missing_files_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Why `--jit` is off on CPU\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## A section, with punctuation!\n\n"
        "[ok](other.md) [ok](other.md#why---jit-is-off-on-cpu) [ok](other.md#notes-1) [ok](#a-section-with-punctuation)\n"
        "[gone](missing.md) [bad anchor](other.md#scaling-out) ![gone](missing.png) [bad](#nowhere)\n"
        "`[code](not-a-link.md)`\n\n```\n[code](also-not-a-link.md)\n# not a heading\n```\n"
        "[external](https://example.com/x.md)\n"
    )
    assert broken_links(page) == [
        f"missing.md: no such file {tmp_path / 'missing.md'}",
        "other.md#scaling-out: no heading #scaling-out in other.md",
        f"missing.png: no such file {tmp_path / 'missing.png'}",
        "#nowhere: no heading #nowhere in page.md",
    ]


def test_slugs_follow_github():
    assert slug("How the `default` recipe was chosen") == "how-the-default-recipe-was-chosen"
    assert slug("Resume after a crash, a kill or Ctrl-C") == "resume-after-a-crash-a-kill-or-ctrl-c"
    assert slug("Why `--jit` is off on CPU") == "why---jit-is-off-on-cpu"
    assert slug("One `make train`") == "one-make-train"
    assert slug("Reproducibility: what to expect from reruns") == "reproducibility-what-to-expect-from-reruns"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def notebook_markdown() -> list[tuple[str, str]]:
    cells = []
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "markdown":
                cells.append((notebook.name, "".join(cell["source"])))
    return cells


def test_user_docs_speak_of_the_project_not_its_history():
    texts = [(p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8")) for p in PAGES]
    found = [
        f"{name}: {match.group(0)!r}"
        for name, text in texts + notebook_markdown()
        for match in HISTORY_WORDS.finditer(text)
    ]
    assert found == []


def test_the_history_word_check_catches_them():
    for text in ("as in issue 7", "the previous session", "the seed sketch's network", "kept, not tuned"):
        assert HISTORY_WORDS.search(text), text
    assert not HISTORY_WORDS.search("keras-team/keras/issues/20585: a sketchy-free baseline, retuned")


# A test named on a page: its path under tests/, then the function, e.g. unit/cli/test_cli.py::test_version_and_help.
TEST_REFERENCE = re.compile(r"((?:\b\w+/)*test_\w+\.py)::(test_\w+)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_test_a_page_names_exists(page):
    if not page.exists():
        pytest.skip(f"{page} not written")
    missing = [
        f"{name}::{test}"
        for name, test in TEST_REFERENCE.findall(page.read_text())
        if not (REPO / "tests" / name).is_file()
        or not re.search(rf"^(async )?def {test}\b", (REPO / "tests" / name).read_text(), re.MULTILINE)
    ]
    assert not missing, f"{page.name} names tests that do not exist: {missing}"
