"""ch13_workflows, in the order of its README: the diff, the app's title, the chapter's own suite and the compose file
it carries, users seeded, an export in chunks (every user once, its progress pushed), a cancel, bad input, a failing
chunk, a worker killed mid-chunk, the rate of the email service with Celery's rate_limit and with the bucket, retries in
one place, the page, no server error, and run_all.sh.

Real processes started with the Procfile's commands (`alembic upgrade head`, `python seed.py`, the `exports` worker,
three `worker`s, the stand-in, `uvicorn main:app`); the database and the media folder are the test module's own.
A chunk takes 0.3 s here (EXPORT_CHUNK_DELAY), so that an export lasts long enough to be cancelled or killed.
"""

import csv
import io
import json
import os
import re
import signal
import socket
import sqlite3
from collections import Counter

import httpx2
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from websockets.sync.client import connect

from containers import compose_config_problems, compose_differs_from_procfile
from helpers import (
    address,
    avatars_may_be_refused,
    chapter_suite,
    no_request_gets_a_server_error,
    own_database,
    readme_has_current_diff,
    start_workers,
)
from processes import free_port, wait_for

CHAPTER = "ch13_workflows"
USERS = 2000
COLUMNS = ["id", "email", "name", "created_at", "subscribed_at"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("ch13") / "media"


@pytest.fixture(scope="module")
def chapter_env(chapter_env, media):
    return chapter_env | own_database(media.parent, THIRD_PARTY_DELAY="0.1", EXPORT_CHUNK_DELAY="0.3")


@pytest.fixture(scope="module")
def database(media):
    return media.parent / "app.db"


@pytest.fixture(scope="module")
def seeded(start, migrated):
    """`python seed.py 2000`, as the README runs it; its output."""
    process = start("python", "seed.py", str(USERS))
    wait_for(lambda: process.proc.poll() is not None, 60, "seed.py")
    assert process.stop() == 0, process.output
    return process.output


@pytest.fixture(scope="module")
def web(seeded, web):
    return web


@pytest.fixture(scope="module")
def exports_worker(start, migrated):
    """The Procfile's `exports` worker, the one that takes the chunks and the joins."""
    return start.line("exports")


def start_export(web, **options):
    answered = httpx2.post(f"{web}/exports", json=options or None, timeout=10)
    assert answered.status_code == 202, answered.text
    return answered.json()["task_id"]


def export(web, task_id):
    return httpx2.get(f"{web}/exports/{task_id}", timeout=10).json()


def when_ended(web, task_id, timeout=60):
    def ended():
        body = export(web, task_id)
        return body["state"] in ("SUCCESS", "FAILURE", "REVOKED") and body

    return wait_for(ended, timeout, f"export {task_id} to end")


def pushed(web, task_id, timeout=60):
    """Every state chapter 6's WebSocket pushes for the export, until the server closes it."""
    with connect(f"ws{web.removeprefix('http')}/ws/task_status/{task_id}", open_timeout=10) as websocket:
        return [json.loads(message) for message in websocket]


def rows_of(web, url):
    served = httpx2.get(f"{web}{url}", timeout=10)
    assert (served.status_code, served.headers["content-type"]) == (200, "text/csv; charset=utf-8")
    return list(csv.reader(io.StringIO(served.text)))


def users_in(database):
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT id, email FROM users ORDER BY id").fetchall()


def nothing_queued_or_running(main):
    """The exports queue is empty and no worker runs a task: every chunk of a cancelled export has been taken."""
    active = main.celery.control.inspect(timeout=1).active() or {}
    return main.celery.backend.client.llen("exports") == 0 and not any(active.values())


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 13: workflows", "version": "ch13_workflows"}


@pytest.mark.timeout(300)
def test_the_chapters_own_suite_passes(chapter):
    """`pytest` inside the folder, as the README runs it: the suite carried from chapters 10 and 12, and the tests of
    the exports, the retries and the rate, with a worker in their process; on SQLite (chapter 10's run it on
    PostgreSQL)."""
    output = chapter_suite(chapter)
    for layer in ("test_exports.py ............", "test_ratelimit.py ..", "test_retrying.py ......"):
        assert f"tests/{layer} " in output, output
    assert "81 passed, 2 xfailed in " in output, output


def test_the_compose_file_runs_the_procfiles_processes_the_exports_worker_too(chapter):
    """Chapter 11's containers, carried, with a service for the new worker: checked, not run again."""
    assert compose_differs_from_procfile(chapter) == []
    assert compose_config_problems(chapter) == []


def test_seed_adds_users_with_no_task(seeded, database):
    assert seeded == f"{USERS} users added; {USERS} in all\n"
    assert len(users_in(database)) == USERS


def test_an_export_has_every_user_exactly_once(web, exports_worker, database, media):
    task_id = start_export(web)
    status = when_ended(web, task_id)
    url = f"/media/exports/{task_id}.csv"
    assert status == {
        "task_id": task_id,
        "state": "SUCCESS",
        "done": 4,
        "total": 4,
        "users": USERS,
        "url": url,
        "error": None,
    }
    rows = rows_of(web, url)
    assert rows[0] == COLUMNS
    assert [(int(row[0]), row[1]) for row in rows[1:]] == users_in(database)  # each once, in order
    assert not (media / "chunks" / task_id).exists()  # the chunks are gone once joined
    assert httpx2.get(f"{web}/media/chunks/{task_id}/00000.csv").status_code == 404


def test_the_progress_is_pushed_only_grows_and_reaches_the_total(web, exports_worker):
    task_id = start_export(web, chunk_size=100)
    states = pushed(web, task_id)
    progress = [status["result"]["done"] for status in states if status["state"] == "PROGRESS"]
    assert progress == sorted(set(progress)) and progress[-1] == 20, states
    assert {status["result"]["total"] for status in states if status["state"] == "PROGRESS"} == {20}
    assert [status["state"] for status in states if status["state"] != "PROGRESS"][-2:] == ["STARTED", "SUCCESS"]
    assert states[-1]["result"] == {"url": f"/media/exports/{task_id}.csv", "users": USERS}


def test_a_cancelled_export_leaves_no_file_and_its_join_never_runs(web, exports_worker, main, media):
    task_id = start_export(web, chunk_size=50)
    wait_for(lambda: export(web, task_id)["done"] >= 2, 30, "two chunks written")
    cancelled = httpx2.delete(f"{web}/exports/{task_id}", timeout=10)
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["state"], body["error"], body["total"], 2 <= body["done"] < 40) == (
        "REVOKED",
        "TaskRevokedError: revoked",
        40,
        True,
    )
    wait_for(lambda: nothing_queued_or_running(main), 60, "every chunk to be taken")
    assert export(web, task_id)["state"] == "REVOKED"
    assert not (media / "chunks" / task_id).exists() and not (media / "exports" / f"{task_id}.csv").exists()
    assert f"exports.join[{task_id}]" not in exports_worker.output
    assert " ignored" in exports_worker.output  # the chunks that started after the cancel did nothing


def test_an_ended_export_cannot_be_cancelled_and_an_unknown_one_is_a_404(web, exports_worker):
    done = start_export(web)
    when_ended(web, done)
    refused = httpx2.delete(f"{web}/exports/{done}")
    assert (refused.status_code, refused.json()) == (409, {"detail": f"export {done} has ended already: SUCCESS"})
    running = start_export(web, chunk_size=50)
    assert httpx2.delete(f"{web}/exports/{running}").status_code == 200
    twice = httpx2.delete(f"{web}/exports/{running}")
    assert (twice.status_code, twice.json()) == (409, {"detail": f"export {running} has ended already: REVOKED"})
    for method in ("GET", "DELETE"):
        unknown = httpx2.request(method, f"{web}/exports/no-such-export")
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "no export no-such-export"})


@pytest.mark.parametrize(
    "body, message",
    [
        ({"chunk_size": 0}, "Input should be greater than or equal to 50"),
        ({"chunk_size": 1_000_000}, "Input should be less than or equal to 10000"),
        ({"chunk_size": "many"}, "Input should be a valid integer, unable to parse string as an integer"),
        ({"chunks": 5}, "Extra inputs are not permitted"),
    ],
    ids=["zero", "a million", "not a number", "a misspelt option"],
)
def test_bad_options_are_a_422(web, body, message):
    refused = httpx2.post(f"{web}/exports", json=body)
    assert (refused.status_code, refused.json()["detail"][0]["msg"]) == (422, message)


def test_no_body_or_an_empty_one_takes_the_defaults(web, exports_worker):
    for body in ({"content": b""}, {"json": {}}):
        task_id = httpx2.post(f"{web}/exports", **body).json()["task_id"]
        assert export(web, task_id)["total"] == 4  # chunks of 500


def test_a_failing_chunk_fails_the_export_once_and_leaves_nothing(web, exports_worker, database, media):
    """A user stored around the API, with no valid address: its chunk fails, and with it the export, once every other
    chunk has reported (a chord waits on every member)."""
    with sqlite3.connect(database) as connection:
        bad = connection.execute(
            "INSERT INTO users (email, name, created_at, task_id) VALUES ('not-an-address', 'Bad', "
            "'2026-12-01 00:00:00', 'none')"
        ).lastrowid
    try:
        discarded = exports_worker.output.count("Task exports.discard[")
        task_id = start_export(web)
        status = when_ended(web, task_id)
        assert status["state"] == "FAILURE"
        assert status["error"].startswith("ChordError: Dependency "), status
        assert status["error"].endswith(
            f" raised BadRow('user {bad}: value is not a valid email address: An email address must have an @-sign.')"
        )
        wait_for(lambda: not (media / "chunks" / task_id).exists(), 10, "the chunks to be discarded")
        assert not (media / "exports" / f"{task_id}.csv").exists()
        # discard, the export's error callback: sent (chapter 12's line, by the chunk), received, then succeeded, once
        wait_for(lambda: exports_worker.output.count("Task exports.discard[") == discarded + 3, 10, "discard")
        assert f"exports.join[{task_id}]" not in exports_worker.output
        assert exports_worker.output.count("raised expected: BadRow(") == 1  # one failure, not retried
        refused = httpx2.delete(f"{web}/exports/{task_id}")
        assert (refused.status_code, refused.json()["detail"]) == (409, f"export {task_id} has ended already: FAILURE")
    finally:
        with sqlite3.connect(database) as connection:
            connection.execute("DELETE FROM users WHERE id = ?", [bad])


def test_a_worker_killed_mid_chunk_loses_nothing(web, exports_worker, start, main, database):
    """A second `exports` worker, of one process whose chunks take 2 s: its process is killed while it writes one."""
    slow = start.line("exports", node="slow@%h", extra=["-c", "1"], env={"EXPORT_CHUNK_DELAY": "2"})
    task_id = start_export(web, chunk_size=50)

    def running_chunk():
        active = main.celery.control.inspect(timeout=1, destination=[f"slow@{socket.gethostname()}"]).active() or {}
        return next((task for tasks in active.values() for task in tasks), None)

    chunk = wait_for(running_chunk, 30, "a chunk to run on the slow worker")
    os.kill(chunk["worker_pid"], signal.SIGKILL)  # mid-chunk: it takes 2 s
    status = when_ended(web, task_id)
    assert (status["state"], status["done"], status["total"]) == ("SUCCESS", 40, 40)
    rows = rows_of(web, status["url"])
    assert [(int(row[0]), row[1]) for row in rows[1:]] == users_in(database)
    assert "exited with 'signal 9 (SIGKILL)'" in slow.output
    received = re.findall(r"Task exports\.write_chunk\[([^\]]+)\] received", exports_worker.output + slow.output)
    assert Counter(received)[chunk["id"]] == 2, chunk  # the killed chunk ran again
    slow.stop()


def send_subscriptions(main, count=60):
    """`count` subscriptions at once; once each has ended, the states they ended in."""
    results = [main.subscribe.delay(address()) for _ in range(count)]
    wait_for(lambda: all(result.ready() for result in results), 90, "every subscription to end")
    return [(result.state, result.retries) for result in results]


def stats(chapter_env, clear=False):
    return httpx2.request("DELETE" if clear else "GET", f"{chapter_env['THIRD_PARTY_URL']}/stats").json()


def test_celerys_rate_limit_is_per_worker_three_workers_three_times_the_rate(start, main, third_party, chapter_env):
    """Celery's own rate_limit, set as the README sets it, and no bucket: each of three workers keeps 8 a second, so
    the service gets 24 a second, and refuses what is over its 10."""
    workers = start_workers(start, ("one", "two", "three"), env={"THIRD_PARTY_RATE": "0"})
    try:
        limited = start("celery", "-A", "main.celery", "control", "rate_limit", "tasks.subscribe", "8/s")
        wait_for(lambda: limited.proc.poll() is not None, 30, "celery control rate_limit")
        for name in ("one", "two", "three"):
            assert re.search(rf"->  {name}@\S+: OK\s+new rate limit set successfully", limited.output), limited.output
        stats(chapter_env, clear=True)
        send_subscriptions(main)
        seen = stats(chapter_env)
        assert seen["busiest_second"] > 10 and seen["refused"] > 0, seen
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture(scope="module")
def bucket_workers(start, third_party):
    """Three `worker`s, as three terminals start them, with the chapter's bucket (8 calls a second, all together)."""
    return start_workers(start, ("four", "five", "six"))


def test_the_bucket_keeps_the_services_limit_with_three_workers(main, bucket_workers, chapter_env):
    stats(chapter_env, clear=True)
    ended = send_subscriptions(main)
    seen = stats(chapter_env)
    assert (seen["busiest_second"] <= 10, seen["refused"], seen["calls"]) == (True, 0, 60), seen
    # waiting for a token is not a try: every subscription succeeded at its first call, with no retry counted
    assert set(ended) == {("SUCCESS", 0)}
    waited = "RateLimited('the email service takes 8 calls a second: the next in "
    assert any(waited in worker.output for worker in bucket_workers)


def test_a_bad_address_fails_at_once_and_a_failing_service_is_retried_with_back_off(main, bucket_workers):
    email = address("+invalid")
    refused = main.subscribe.delay(email)
    refused.get(timeout=20, propagate=False)
    assert (refused.state, refused.retries) == ("FAILURE", 0)
    assert repr(refused.result) == (
        f"BadAddress('the service refused {email}: 422 "
        f'{{"detail":"{email} is not an address this service accepts"}}\')'
    )
    flaky = main.subscribe.delay(address("+fail2"))
    assert flaky.get(timeout=30)["subscribed"].endswith("+fail2@example.com")
    assert flaky.retries == 2
    retried = f"[{flaky.id}] retry: Retry in "
    lines = sorted(line for worker in bucket_workers for line in worker.output.splitlines() if retried in line)
    waits = [int(line.split("Retry in ")[1].split("s")[0]) for line in lines if "HTTPError('503" in line]
    assert len(waits) == 2 and waits[0] <= 1 and waits[1] <= 2, lines  # RETRY_COUNTDOWN=1: up to 1 s, then 2 s


def test_the_page_shows_the_progress_then_the_file_and_a_cancel(page, web, exports_worker):
    page.goto(f"{web}/form_export")
    state, done, file = page.locator("#state"), page.locator("#done"), page.locator("#file")
    page.fill("input[name=chunk_size]", "100")
    page.click("#export button:not(#cancel)")
    expect(page.locator("#states")).to_contain_text("PROGRESS 1/20", timeout=20_000)
    expect(done).to_have_text("20 of 20 chunks", timeout=30_000)
    expect(state).to_have_text("SUCCESS")
    expect(file).to_have_text(f"the file: {USERS} users")
    assert file.get_attribute("href").startswith("/media/exports/")

    page.fill("input[name=chunk_size]", "50")
    page.click("#export button:not(#cancel)")
    expect(page.locator("#states")).to_contain_text("PROGRESS 1/40", timeout=20_000)
    page.click("#cancel")
    expect(state).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(file).to_be_hidden()


def test_no_request_gets_a_server_error(api_schema, seeded):
    """Every check, but for chapter 9's upload, whose valid input may be refused (helpers.avatars_may_be_refused)."""
    assert no_request_gets_a_server_error(avatars_may_be_refused(api_schema))


def test_run_all_starts_a_worker_for_the_exports(stack, tmp_path):
    """The Procfile, run by ./run_all.sh with a Redis of its own: three workers, one per queue; an export of no user
    is a file of headers only."""
    ch13 = stack("13", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **own_database(tmp_path))
    ch13.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=120)
    host, port = socket.gethostname(), ch13.ports["WEB_PORT"]
    for name in (f"exports-web{port}@{host}", f"{ch13.web}/form_export"):
        assert name in ch13.process.output, ch13.process.output
    status = when_ended(ch13.web, start_export(ch13.web))
    assert (status["state"], status["total"], status["users"]) == ("SUCCESS", 0, 0)
    assert rows_of(ch13.web, status["url"]) == [COLUMNS]
    assert ch13.ctrl_c() == 130
