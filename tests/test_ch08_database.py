"""ch08_database, in the order of its README, on SQLite and again on PostgreSQL: the diff, the migrations, a user
created then subscribed, the task sent before the commit (failing for certain) and after it, bad input, fifty users at
once with two workers, a subscription that happens once, the database away, and what chapter 6 had.

Real processes started with the reader's commands: `alembic upgrade head`, two workers, the stand-in (0.1 s a call
here), `uvicorn main:app`; the database is a file of the test's own, or a PostgreSQL database made for it.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx2
import psycopg
import pytest
import redis
from playwright.sync_api import expect
from websockets.sync.client import connect

from beat_helpers import earlier_tasks_results
from helpers import (
    POSTGRESQL,
    address,
    no_request_gets_a_server_error,
    readme_has_current_diff,
    start_workers,
    status_when_done,
    url_answers,
)
from processes import free_port, wait_for
from scenarios import assert_redis_down_then_back

CHAPTER = "ch08_database"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('ch08')}/app.db"
    return request.getfixturevalue("postgresql")()


@pytest.fixture(scope="module")
def chapter_env(chapter_env, database_url):
    return chapter_env | {"DATABASE_URL": database_url, "THIRD_PARTY_DELAY": "0.1"}


@pytest.fixture(scope="module")
def web(migrated, web):
    return web


@pytest.fixture(scope="module")
def workers(start, migrated):
    """Two workers, as two terminals start them."""
    return start_workers(start)


@pytest.fixture(scope="module")
def chapter_modules(main):
    """What the chapter's modules hold, as `main` imported them: its Session, User, task, on_commit and Celery app."""
    database, models, tasks = (sys.modules[name] for name in ("database", "models", "tasks"))
    yield SimpleNamespace(
        Session=database.Session,
        on_commit=database.on_commit,
        User=models.User,
        subscribe_user=tasks.subscribe_user,
        celery=main.celery,
    )
    database.engine.dispose()  # its connections closed here, not by the garbage collector


def new_user(web, email, name="Ann"):
    return httpx2.post(f"{web}/users", json={"email": email, "name": name}, timeout=10)


def when_subscribed(web, user_id, timeout=20):
    """GET /users/{id}, once its task has ended."""
    return status_when_done(web, user_id, timeout, path="/users/{}")


def task_status(web, task_id):
    return httpx2.get(f"{web}/tasks/{task_id}").json()


def uncommitted_user(modules, session):
    """A user added and flushed: the INSERT is sent and the id known, but nothing is committed."""
    user = modules.User(email=address(), name="Ann", task_id=str(uuid.uuid4()))
    session.add(user)
    session.flush()
    return user


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)


def test_migrations_make_the_tables_from_empty(migrated, start):
    assert "Running upgrade  -> 0001, users: the table of models.User." in migrated
    again = start("alembic", "upgrade", "head")  # applies nothing: the database says it is at 0001 already
    wait_for(lambda: again.proc.poll() is not None, 30, "alembic upgrade head, again")
    assert again.stop() == 0 and "Running upgrade" not in again.output, again.output
    assert again.output.count("INFO  [alembic.runtime.migration] ") == 2  # "Context impl ...", "Will assume ..."
    check = start("alembic", "check")  # the models and the migrated database agree, column for column
    wait_for(lambda: check.proc.poll() is not None, 30, "alembic check")
    assert (check.stop(), check.output.splitlines()[-1]) == (0, "No new upgrade operations detected."), check.output


def test_a_user_is_stored_then_subscribed(web, workers, third_party):
    email = address()
    created = new_user(web, email)
    assert created.status_code == 201
    user_id, task_id = created.json()["id"], created.json()["task_id"]
    assert created.json() == {"id": user_id, "task_id": task_id}
    body = when_subscribed(web, user_id)
    assert body == {
        "id": user_id,
        "email": email,
        "name": "Ann",
        "created_at": body["created_at"],
        "subscribed_at": body["subscribed_at"],
        "task": {"task_id": task_id, "state": "SUCCESS", "retries": 0, "result": {"subscribed": email}, "error": None},
    }
    assert body["created_at"] < body["subscribed_at"]
    assert body["subscribed_at"].endswith("+00:00")  # UTC, on SQLite as on PostgreSQL


def test_a_task_sent_before_the_commit_finds_no_user(web, workers, chapter_modules):
    """The wrong order, made certain: the task runs, and fails, before the transaction commits."""
    with chapter_modules.Session() as session:
        user = uncommitted_user(chapter_modules, session)
        task = chapter_modules.subscribe_user.apply_async([user.id], task_id=user.task_id)  # before the commit
        wait_for(task.ready, 20, "the task to end")
        session.commit()
    body = httpx2.get(f"{web}/users/{user.id}").json()
    assert (body["subscribed_at"], body["task"]["state"], body["task"]["error"]) == (
        None,
        "FAILURE",
        "NoResultFound: No row was found when one was required",
    )


def test_a_task_sent_on_commit_finds_the_user_and_a_rollback_sends_nothing(web, workers, third_party, chapter_modules):
    sent = []
    with chapter_modules.Session() as session:
        user = uncommitted_user(chapter_modules, session)
        user_id, task_id = user.id, user.task_id  # a rollback expires the session's objects: read them now
        chapter_modules.on_commit(
            session, lambda: sent.append(chapter_modules.subscribe_user.apply_async([user_id], task_id=task_id))
        )
        assert sent == []
        session.commit()
        assert len(sent) == 1
        rolled_back = uncommitted_user(chapter_modules, session).id
        chapter_modules.on_commit(session, lambda: sent.append(chapter_modules.subscribe_user.delay(rolled_back)))
        session.rollback()
        session.commit()  # a later commit of the same session does not send what the rollback dropped
    assert len(sent) == 1
    assert when_subscribed(web, user_id)["task"]["state"] == "SUCCESS"
    assert httpx2.get(f"{web}/users/{rolled_back}").status_code == 404


def test_the_sweep_sends_again_a_user_whose_task_was_lost(web, workers, third_party, chapter_modules, redis_url):
    """A user committed three minutes ago whose task never left (Redis went away after the commit), and one whose
    service refused it (+down): chapter 7's sweep, once a health check found the service up, sends the first again."""
    users = []
    with chapter_modules.Session() as session:
        for email in (address(), address("+down")):
            users.append(uncommitted_user(chapter_modules, session))
            users[-1].email, users[-1].created_at = email, datetime.now(UTC) - timedelta(minutes=3)
        session.commit()
    lost, refused = users
    chapter_modules.subscribe_user.apply_async([refused.id], task_id=refused.task_id)
    assert when_subscribed(web, refused.id)["task"]["state"] == "FAILURE"
    health = redis.Redis.from_url(redis_url)
    health.delete("email-service-health")
    chapter_modules.celery.send_task("periodic.check_service")  # as beat sends them
    wait_for(lambda: json.loads(health.get("email-service-health") or "{}").get("service") == "up", 10, "a check")
    chapter_modules.celery.send_task("periodic.resend_failed")
    assert when_subscribed(web, lost.id)["task"]["result"] == {"subscribed": lost.email}
    assert httpx2.get(f"{web}/users/{refused.id}").json()["subscribed_at"] is None
    assert third_party.output.count(f"{refused.email}, call") == 4  # its first task's, and no more


def test_get_users_lists_the_latest_first(web):
    emails = [address() for _ in range(3)]
    ids = [new_user(web, email).json()["id"] for email in emails]
    listed = httpx2.get(f"{web}/users").json()
    assert [(user["id"], user["email"]) for user in listed[:3]] == list(zip(ids, emails, strict=True))[::-1]
    assert set(listed[0]) == {"id", "email", "name", "created_at", "subscribed_at"} and len(listed) <= 100


def test_the_page_shows_a_user_stored_then_subscribed(page, web, workers, third_party):
    email = address()
    page.goto(f"{web}/form_users")
    page.fill("input[name=email]", email)
    page.click("#user button")
    states = page.locator("#states")
    expect(states).to_contain_text("stored (201)")
    expect(states).to_contain_text("SUCCESS", timeout=20_000)
    row = page.locator("#users tr", has_text=email)
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\dT.*\+00:00$"))
    page.click("#user button")  # the same address again
    expect(states).to_have_text(f"409: a user with the email {email} exists already")


def test_a_taken_email_is_a_409(web):
    email = address()
    assert new_user(web, email).status_code == 201
    taken = new_user(web, email, name="Bob")
    assert (taken.status_code, taken.json()) == (409, {"detail": f"a user with the email {email} exists already"})


def test_an_invalid_email_is_a_422_and_no_user_a_404(web):
    invalid = new_user(web, "not-an-address")
    assert (invalid.status_code, invalid.json()["detail"][0]["msg"]) == (
        422,
        "value is not a valid email address: An email address must have an @-sign.",
    )
    missing = httpx2.get(f"{web}/users/2147483647")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no user 2147483647"})


def test_fifty_users_at_once_with_two_workers(web, workers, third_party):
    emails = [address() for _ in range(50)]
    with ThreadPoolExecutor(50) as pool:
        created = list(pool.map(lambda email: new_user(web, email, name="Fifty"), emails))
    assert [response.status_code for response in created] == [201] * 50
    ended = [when_subscribed(web, response.json()["id"], timeout=60) for response in created]
    assert [(user["email"], user["task"]["state"], user["task"]["retries"]) for user in ended] == [
        (email, "SUCCESS", 0) for email in emails
    ]
    assert all(user["subscribed_at"] for user in ended)
    assert not [process.args for process in [web.process, *workers] if "database is locked" in process.output]
    assert all("Task tasks.subscribe_user[" in worker.output for worker in workers)  # both workers wrote


def test_a_second_send_calls_the_service_no_more(web, workers, third_party, chapter_modules):
    email = address()
    user_id = new_user(web, email).json()["id"]
    first = when_subscribed(web, user_id)["subscribed_at"]
    again = chapter_modules.subscribe_user.delay(user_id)  # a redelivery, a retry, or a sweep
    assert again.get(timeout=20) == {"subscribed": email}
    assert httpx2.get(f"{web}/users/{user_id}").json()["subscribed_at"] == first
    assert third_party.output.count(f"{email}, call") == 1


def test_a_worker_killed_mid_task_subscribes_the_user_once(web, start, chapter_modules):
    """A worker of the test's own, on a queue of its own, calling a slow service (3 s a call): its process is killed
    while the service is being called."""
    slow = f"http://127.0.0.1:{free_port()}"
    env = {"THIRD_PARTY_URL": slow, "THIRD_PARTY_DELAY": "3"}
    service = start("uvicorn", "third_party:app", "--port", slow.rsplit(":", 1)[1], env=env)
    worker = start(
        "celery", "-A", "main.celery", "worker", "--loglevel=info", "-c", "1", "-n", "k@%h", "-Q", "k", env=env
    )
    wait_for(lambda: url_answers(f"{slow}/openapi.json"), 30, "the slow stand-in")
    worker.wait_for_output(" ready.", timeout=60)
    with chapter_modules.Session() as session:
        user = uncommitted_user(chapter_modules, session)
        session.commit()
    task = chapter_modules.subscribe_user.apply_async([user.id], task_id=user.task_id, queue="k")

    def running_pid():
        active = chapter_modules.celery.control.inspect(timeout=1).active() or {}
        return next((t["worker_pid"] for tasks in active.values() for t in tasks if t["id"] == task.id), None)

    os.kill(wait_for(running_pid, 15, "the task to run"), signal.SIGKILL)  # mid-call: the service takes 3 s
    assert task.get(timeout=30) == {"subscribed": user.email}
    assert "exited with 'signal 9 (SIGKILL)'" in worker.output
    subscribed = httpx2.get(f"{web}/users/{user.id}").json()
    assert subscribed["subscribed_at"] and subscribed["task"]["state"] == "SUCCESS"
    assert service.output.count(f"{user.email}, call") <= 2  # the killed call, perhaps answered, and the one after


@contextmanager
def database_away(database_url):
    """SQLite: another connection holds the write lock. PostgreSQL: the database refuses connections, and its
    open ones are closed. The machine's server itself is never stopped."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield "database is locked"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRESQL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        try:
            yield f'database "{name}" is not currently accepting connections'
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_the_database_away_is_a_503_in_under_2_s_and_a_task_waits_for_it(
    web, workers, third_party, chapter_modules, database_url
):
    email = address()
    with chapter_modules.Session() as session:
        user = uncommitted_user(chapter_modules, session)
        user.email = email
        session.commit()
    with database_away(database_url) as reason:
        task = chapter_modules.subscribe_user.apply_async([user.id], task_id=user.task_id)
        started = time.monotonic()
        refused = new_user(web, address())
        took = time.monotonic() - started
        assert (refused.status_code, took < 2) == (503, True), (took, refused.text)
        assert (
            refused.json()["detail"].startswith("The database is unavailable: ") and reason in refused.json()["detail"]
        )
        status = wait_for(
            # One request: the retry may have begun by a second one
            lambda: (retry := task_status(web, task.id))["state"] == "RETRY" and retry,
            20,
            "RETRY",
        )
        assert status["error"] == f"ConnectionError: {refused.json()['detail']}"
    assert new_user(web, address()).status_code == 201
    assert task.get(timeout=20) == {"subscribed": email}
    assert httpx2.get(f"{web}/users/{user.id}").json()["subscribed_at"]


def test_the_users_task_is_pushed_over_the_websocket(web, workers, third_party):
    email = address()
    task_id = new_user(web, email).json()["task_id"]
    with connect(f"ws{web.removeprefix('http')}/ws/task_status/{task_id}", open_timeout=10) as socket:
        final = None
        for message in socket:
            final = message
    assert '"state":"SUCCESS"' in final and email in final


def test_chapter_3s_divide_and_chapter_6s_import_still_run(web, workers, third_party):
    divided, imported = earlier_tasks_results(web)
    assert (divided, imported["subscribed"], len(imported["failed"])) == (0.25, 1, 1)


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_no_request_gets_a_server_error(api_schema, migrated, database_url):
    if database_url.startswith("postgresql"):  # the rest of the API is SQLite's run's, and chapter 6's: the same code
        api_schema = api_schema.include(path_regex="^/users")
    assert no_request_gets_a_server_error(api_schema)


def test_the_database_file_is_git_ignored(chapter):
    ignored = subprocess.run(["git", "check-ignore", "-q", str(chapter / "app.db")], cwd=chapter)
    assert ignored.returncode == 0


def test_run_all_applies_the_migrations_then_serves(stack, repository_copy, redis_url, database_url, request):
    """./run_all.sh ch08_database: on SQLite with no DATABASE_URL (the file in the chapter folder, in a copy of the
    repository), or on a new PostgreSQL database; its Redis database is its own, so no other worker takes its tasks."""
    env = {"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/3", "THIRD_PARTY_DELAY": "0.1"}
    if database_url.startswith("postgresql"):
        env["DATABASE_URL"] = request.getfixturevalue("postgresql")()
    ch08 = stack("8", root=repository_copy, **env)
    ch08.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=120)
    assert "Running upgrade  -> 0001, users: the table of models.User." in ch08.process.output
    ch08.process.wait_for_output("Sending due task check-email-service", timeout=30)  # chapter 7's beat, too
    email = address()
    created = new_user(ch08.web, email)
    assert created.status_code == 201, created.text
    assert when_subscribed(ch08.web, created.json()["id"])["task"]["result"] == {"subscribed": email}
    assert (repository_copy / CHAPTER / "app.db").exists() == ("DATABASE_URL" not in env)
    assert ch08.ctrl_c() == 130
