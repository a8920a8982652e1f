"""ch10_testing, in the order of its README: the chapter's own suite, run as a reader runs it, `pytest` inside the
folder: every layer passes with the counts the README shows, the eager-mode lesson kept; the fast layers alone, with
no Redis, through `./run_all.sh test ch10`; on PostgreSQL, with coverage; the diff.

The app is chapter 9's, which tests/test_ch09_thumbnails.py tests with real processes; here, its tests are the point.
"""

import re

import pytest

from helpers import chapter_suite, readme_has_current_diff, run_all

CHAPTER = "ch10_testing"
# A file's line of pytest's progress: its name, then a character for each test (. passed, x xfailed, F failed...)
LAYER = re.compile(r"^(tests/test_\w+\.py) ([.sxXFE]+) +\[ *\d+%\]$", re.M)
SUMMARY = re.compile(r"^=+ (\d+ passed.*) in [\d.]+s(?: \([\d:]+\))? =+$", re.M)
LESSON = re.compile(r"^XFAIL tests/test_eager\.py::\w+\[worker\] - .+$", re.M)


def readme_run(chapter, command):
    """The output the README shows for a command (a ```console block starting with `$ COMMAND`)."""
    readme = (chapter / "README.md").read_text()
    start = readme.index(f"```console\n$ {command}\n")
    return readme[start : readme.index("\n```", start)]


def layers(output):
    return dict(LAYER.findall(output))


def the_folder(chapter):
    """The chapter folder's files, but for what pytest and coverage.py write there (git ignores it)."""
    return {path.name for path in chapter.iterdir()} - {".pytest_cache", ".coverage", "__pycache__"}


@pytest.mark.timeout(300)
def test_the_chapters_suite_passes_as_the_readme_shows(chapter):
    before = the_folder(chapter)
    output = chapter_suite(chapter)
    assert the_folder(chapter) == before  # no app.db, no media/: the run's own are in a folder of its own, gone
    shown = readme_run(chapter, "pytest")
    assert layers(output) == layers(shown) and len(layers(output)) == 7, output
    assert SUMMARY.findall(output) == SUMMARY.findall(shown) == ["56 passed, 2 xfailed"], output
    # The lesson: two tests pass in eager mode and fail against the worker, as expected (strict xfail)
    assert LESSON.findall(output) == LESSON.findall(shown) and len(LESSON.findall(output)) == 2, output


@pytest.mark.timeout(300)
def test_run_all_runs_the_fast_layers_alone(chapter):
    """`./run_all.sh test ch10 -m "not worker"`: the suite inside its folder, with no Redis started: the Redis URL the
    app is given has no server behind it, so a test that reached it would fail. Chapter 9 has no suite of its own."""
    done = run_all("test", "ch10", "-m", "not worker", env={"COLUMNS": "80"}, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rootdir: {chapter}" in done.stdout
    assert SUMMARY.findall(done.stdout) == SUMMARY.findall(readme_run(chapter, 'pytest -m "not worker"'))
    assert "tests/test_worker.py" not in layers(done.stdout)
    older = run_all("test", "ch09")
    assert (older.returncode, older.stderr) == (
        1,
        "run_all.sh: ch09_thumbnails has no tests of its own; the repository's: "
        "./run_all.sh test tests/test_ch09_thumbnails.py\n",
    )


@pytest.mark.timeout(300)
def test_the_suite_passes_on_postgresql_with_its_coverage(chapter, postgresql):
    """DATABASE_URL names a PostgreSQL server: the suite makes a database of its own there, and drops it."""
    output = chapter_suite(chapter, "--cov", env={"DATABASE_URL": postgresql()})
    assert layers(output) == layers(readme_run(chapter, "pytest"))
    assert re.search(r"^TOTAL +\d+ +\d+ +\d+%$", output, re.M), output
    assert "tests/" not in output.split("coverage:")[1].split("TOTAL")[0]  # the app is measured, not its tests


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)
