"""Every chapter README, in the format they share: the first command on the first screen, excerpts that are the
chapter's own lines, the full diff folded at the end; and every pointer from a chapter's code to a README heading
leads to one."""

import re

import pytest

from helpers import ROOT

CHAPTERS = sorted(p.name for p in ROOT.glob("ch[0-9][0-9]_*"))
FIRST_SCREEN = 60  # lines
FENCE = re.compile(r"^```\S*\n(.*?)^```$", re.M | re.S)
# A pointer to a README section, in a comment or docstring: README: "Heading", README, "Heading", "Another", or, to
# another chapter's README, ch05_retry/README.md, "Heading".
POINTER = re.compile(r'(?:\b(ch\d\d_\w+)/)?README(?:\.md)?[:,]?\s*(?:#\s*)?((?:"[^"]+"(?:,\s*)?)+)')
# An excerpt of a file of the chapter is a fenced block introduced by the file's name: the last line of text above
# the opening fence ends with the name in backquotes and a colon, as "In `tasks.py`:" or "`form.html`:" (or, from
# chapter 10 on, "`tests/conftest.py`:", a file of the chapter's own tests). Its lines must be lines of that file, in a
# row, as they are there but for their leading indentation (so an excerpt may start inside a function). A block
# introduced otherwise (a shell session, a counter-example) is not checked.
EXCERPT_INTRO = re.compile(r"`([\w./-]+\.\w+)`:$")


def readme(chapter):
    return (ROOT / chapter / "README.md").read_text()


def headings(chapter):
    """The README's headings, fenced blocks left out (a `# comment` in a shell block is no heading)."""
    text = FENCE.sub("", readme(chapter))
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def pointers(chapter):
    """(file, chapter pointed to, heading) for each README section the chapter's code points to."""
    for path in sorted([*(ROOT / chapter).glob("*.py"), *(ROOT / chapter).glob("tests/*.py")]):
        for match in POINTER.finditer(path.read_text()):
            for heading in re.findall(r'"([^"]+)"', match[2]):
                yield str(path.relative_to(ROOT / chapter)), match[1] or chapter, heading


def excerpts(chapter):
    """(file name, the block's lines) for each fenced block the README introduces as a file's."""
    text = readme(chapter)
    for match in FENCE.finditer(text):
        above = [line for line in text[: match.start()].splitlines() if line.strip()]
        intro = EXCERPT_INTRO.search(above[-1]) if above else None
        if intro:
            yield intro[1], match[1].splitlines()


def is_run_of(lines, file_lines):
    """The lines, stripped of their indentation, appear in a row in the file's, stripped the same way."""
    want, have = [line.strip() for line in lines], [line.strip() for line in file_lines]
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_pointer_in_the_code_names_a_heading_of_that_readme(chapter):
    missing = [
        (name, target, heading)
        for name, target, heading in pointers(chapter)
        if not any(heading.lower() in found.lower() for found in headings(target))
    ]
    assert missing == [], "(file, README of chapter, heading it lacks)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_first_command_is_on_the_first_screen(chapter):
    lines = readme(chapter).splitlines()
    first = next((i for i, line in enumerate(lines) if line in ("```bash", "```console")), len(lines))
    assert first + 2 <= FIRST_SCREEN, f"the first command is on line {first + 2}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_excerpts_are_the_chapters_own_lines(chapter):
    found = list(excerpts(chapter))
    assert found, "no excerpt of the chapter's code"
    for name, lines in found:
        path = ROOT / chapter / name
        assert path.exists(), f"an excerpt of {name}, which {chapter} has not"
        assert is_run_of(lines, path.read_text().splitlines()), f"not lines of {name} as they are: {lines}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_full_diff_is_folded_at_the_end(chapter):
    text = readme(chapter)
    last_section = text[text.rindex("\n## ") + 1 :]
    if chapter == CHAPTERS[0]:
        assert last_section.startswith("## What changed\n") and "```diff" not in text
        return
    previous = CHAPTERS[CHAPTERS.index(chapter) - 1]
    assert last_section.startswith(f"## What changed since {previous}\n")
    summary = f"<details><summary>The full diff (<code>./run_all.sh diff {chapter}</code>)</summary>"
    folded = re.escape(summary) + r"\n\n```diff\n(?:(?!```).*\n)*```\n\n</details>\n\Z"
    assert re.search(folded, last_section) and text.count("```diff") == 1
