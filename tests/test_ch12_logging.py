"""ch12_logging, in the order of its README: the diff, one request's story under ./run_all.sh and in the log file, the
same as JSON, the id carried into the tasks a task starts, failures logged once, no secret in any line, a breakpoint
reached over rdb's socket and in eager mode, the chapter's own suite (chapter 10's, and its logging's tests), and the
compose file it carries from chapter 11.

Every process is started with the reader's command (./run_all.sh, or the README's terminals); the broker with a
password is a Redis of the test's own, started with requirepass.
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections import Counter

import httpx2
import pytest
import redis
from celery import Celery

from containers import compose_config_problems, compose_differs_from_procfile
from helpers import (
    CLEAN_ENV,
    VENV_BIN,
    address,
    chapter_suite,
    find_redis_server,
    own_database,
    readme_has_current_diff,
)
from processes import Process, free_port, wait_for

CHAPTER = "ch12_logging"
WORKER = ("celery", "-A", "main.celery", "worker", "--loglevel=info")
# A text line: [time: LEVEL/process] request=ID task[ID]: message
LINE = re.compile(r"^\[[\d\- :,]+: (?P<level>\w+)/(?P<process>[\w-]+)\] (?P<rest>.*)$")
JSON_FIELDS = ["level", "logger", "process", "message", "request_id", "task_id", "task_name", "time"]


@pytest.fixture(scope="module")
def chapter_env(chapter_env, tmp_path_factory):
    return chapter_env | own_database(tmp_path_factory.mktemp("ch12"))


@pytest.fixture(scope="module")
def web(migrated, web):
    return web


def story(lines, request_id):
    """The lines that hold request_id, each without its time and level: (process, the rest of the line)."""
    found = []
    for line in lines:
        if request_id in line and (match := LINE.match(line.split(" | ", 1)[-1])):
            found.append((re.sub(r"-\d+$", "", match["process"]), match["rest"]))  # ForkPoolWorker-2: ForkPoolWorker
    return found


def expected_story(request_id, task_id, user_id, service):
    """The story of POST /users for an address that fails once: what the web logs, then the worker."""
    task = f"tasks.subscribe_user[{task_id}]"
    web = [
        ("SpawnProcess", f"request={request_id}: Task {task} sent to celery"),
        ("SpawnProcess", f'request={request_id}: 127.0.0.1:PORT - "POST /users HTTP/1.1" 201'),
    ]
    worker = [
        ("MainProcess", f"request={request_id}: Task {task} received"),
        ("ForkPoolWorker", f"request={request_id} {task}: calling the email service for user {user_id}, try 1"),
        ("ForkPoolWorker", f"request={request_id}: Task {task} sent to celery"),
        ("MainProcess", f"request={request_id}: Task {task} received"),
        (
            "ForkPoolWorker",
            f"request={request_id}: Task {task} retry: Retry in 1s: HTTPError('503 Server Error: Service "
            f"Unavailable for url: {service}/subscribe')",
        ),
        ("ForkPoolWorker", f"request={request_id} {task}: calling the email service for user {user_id}, try 2"),
        ("ForkPoolWorker", f"request={request_id} {task}: user {user_id} subscribed"),
        (
            "ForkPoolWorker",
            f"request={request_id}: Task {task} succeeded in SECONDS: {{'subscribed': 'a***@example.com'}}",
        ),
    ]
    return web, worker


def normalised(rest):
    rest = re.sub(r"127\.0\.0\.1:\d+ - ", "127.0.0.1:PORT - ", rest)
    return re.sub(r"succeeded in [\d.e-]+s", "succeeded in SECONDS", rest)


@pytest.fixture(scope="module")
def sender(chapter_env):
    """A Celery app of the tests' own that sends the chapter's tasks by their names, as a shell elsewhere would. With
    no result backend: a task's state is read through the API (ended()), and no subscription to Redis is left open."""
    return Celery(broker=chapter_env["CELERY_BROKER_URL"])


def ended(web, task_id, timeout=30):
    """GET /tasks/{task_id}, once the task has ended."""

    def status():
        body = httpx2.get(f"{web}/tasks/{task_id}").json()
        return body["state"] in ("SUCCESS", "FAILURE") and body

    return wait_for(status, timeout, f"task {task_id} to end")


@pytest.fixture
def run(start):
    """start(), each process stopped when the test ends: no worker of one test takes another's tasks."""
    started = []

    def run(*args, env=None):
        started.append(start(*args, env=env))
        return started[-1]

    yield run
    for process in reversed(started):
        process.stop()


def subscribe_user(web, request_id, kind="+fail1"):
    """POST /users with the caller's X-Request-ID, then until its task ends: (answer, the user's JSON)."""
    answer = httpx2.post(
        f"{web}/users", json={"email": address(kind), "name": "Ann"}, headers={"X-Request-ID": request_id}
    )
    assert answer.status_code == 201, answer.text

    def ended():
        user = httpx2.get(f"{web}/users/{answer.json()['id']}").json()
        return user["task"]["state"] in ("SUCCESS", "FAILURE") and user

    return answer, wait_for(ended, 30, "the subscription to end")


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)


def test_one_id_finds_a_requests_story_in_the_terminal_and_in_the_log_file(stack, tmp_path):
    log_file = tmp_path / "logs" / "app.log"
    ch12 = stack(
        "12",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        **own_database(tmp_path),
        LOG_FILE=str(log_file),
        THIRD_PARTY_DELAY="0.1",
        RETRY_COUNTDOWN="1",
    )
    ch12.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=120)
    request_id = f"story-{uuid.uuid4().hex[:8]}"
    answer, user = subscribe_user(ch12.web, request_id)
    assert (answer.headers["x-request-id"], user["task"]["state"]) == (request_id, "SUCCESS")
    web, worker = expected_story(
        request_id, user["task"]["task_id"], user["id"], f"http://127.0.0.1:{ch12.ports['THIRD_PARTY_PORT']}"
    )
    # The worker's main process and its pool's lines interleave as they come: each process's own are in order
    wait_for(lambda: len(story(ch12.lines_of("worker"), request_id)) == len(worker), 10, "the worker's last line")
    # uvicorn --reload serves from a process it started: SpawnProcess-1
    assert [(process, normalised(rest)) for process, rest in story(ch12.lines_of("web"), request_id)] == web
    told = [(process, normalised(rest)) for process, rest in story(ch12.lines_of("worker"), request_id)]
    assert sorted(told) == sorted(worker)
    for process in ("MainProcess", "ForkPoolWorker"):
        assert [line for line in told if line[0] == process] == [line for line in worker if line[0] == process]
    # The same lines, from every process, in the one file they share
    in_file = [(process, normalised(rest)) for process, rest in story(log_file.read_text().splitlines(), request_id)]
    assert sorted(in_file) == sorted(web + worker)
    # Nothing is written twice: each line, with its time to the millisecond, is there once
    lines = [line for line in ch12.process.output.splitlines() if LINE.match(line.split(" | ", 1)[-1])]
    assert [line for line, count in Counter(lines).items() if count > 1] == []
    assert ch12.ctrl_c() == 130


def test_a_callers_id_is_taken_if_it_looks_like_one_else_a_new_one_is_made(web):
    taken = httpx2.get(f"{web}/", headers={"X-Request-ID": "checkout-7f3a.2:1"})
    assert taken.headers["x-request-id"] == "checkout-7f3a.2:1"
    for refused in ["two words", "x" * 65, "ann@example.com", ""]:
        made = httpx2.get(f"{web}/", headers={"X-Request-ID": refused}).headers["x-request-id"]
        assert str(uuid.UUID(made)) == made
    ids = {httpx2.get(f"{web}/").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_json_lines_each_parse_with_the_request_and_task_ids_as_fields(run, migrated, third_party, chapter_env):
    port = free_port()
    web = run("uvicorn", "main:app", "--port", str(port), env={"LOG_FORMAT": "json"})
    worker = run(*WORKER, env={"LOG_FORMAT": "json"})
    worker.wait_for_output(" ready.", timeout=30)
    wait_for(lambda: httpx2.get(f"http://127.0.0.1:{port}/").status_code == 200, 30, "the web app")
    answer, user = subscribe_user(f"http://127.0.0.1:{port}", "json-story")
    task_id = user["task"]["task_id"]
    wait_for(lambda: f"Task tasks.subscribe_user[{task_id}] succeeded" in worker.output, 10, "the last line")
    # uvicorn's two lines before the app starts are its own; the worker's banner is printed, not logged
    web_lines = web.output.splitlines()[2:]
    worker_lines = worker.output.split("[tasks]", 1)[1].split("\n\n", 1)[1].splitlines()
    parsed = [json.loads(line) for line in web_lines + worker_lines]
    assert {tuple(line) for line in parsed} == {tuple(JSON_FIELDS)}
    told = [line for line in parsed if line["request_id"] == "json-story"]
    assert [(line["process"], line["logger"]) for line in told if line["process"] == "MainProcess"] == [
        ("MainProcess", "request_id"),  # the web's "sent"
        ("MainProcess", "uvicorn.access"),
        ("MainProcess", "request_id"),  # the worker's "received", then the retry's
        ("MainProcess", "request_id"),
    ]
    in_task = [line for line in told if line["process"].startswith("ForkPoolWorker")]
    assert {(line["task_id"], line["task_name"]) for line in in_task} == {(task_id, "tasks.subscribe_user")}
    assert [line["message"] for line in in_task if line["logger"] == "tasks"] == [
        f"calling the email service for user {user['id']}, try 1",
        f"calling the email service for user {user['id']}, try 2",
        f"user {user['id']} subscribed",
    ]


@pytest.mark.parametrize("command", [WORKER, ("celery", "-A", "main.celery", "beat", "--loglevel=info")])
def test_a_misspelt_log_format_stops_a_worker_or_beat_saying_so(run, command):
    """Celery catches what a setup_logging receiver raises and goes on, logging nothing: logs.py stops it instead."""
    process = run(*command, env={"LOG_FORMAT": "xml"})
    wait_for(lambda: not process.running(), 30, f"{command[3]} to exit")
    process.reader.join(5)
    assert process.proc.returncode == 1
    assert "LOG_FORMAT='xml': use one of text, json" in process.output


def test_the_tasks_a_task_starts_carry_its_id(run, third_party, sender, web):
    worker = run(*WORKER)
    worker.wait_for_output(" ready.", timeout=30)
    first, second = (sender.signature("tasks.subscribe", (address(),), immutable=True) for _ in range(2))
    # As a request would send it: its id in the message's headers
    result = (first | second).apply_async(headers={"request_id": "chain-story"})
    assert ended(web, result.id)["result"] == {"subscribed": second.args[0]}
    told = story(worker.output.splitlines(), "chain-story")
    assert [rest for _, rest in told if "received" in rest] == [
        f"request=chain-story: Task tasks.subscribe[{result.parent.id}] received",
        f"request=chain-story: Task tasks.subscribe[{result.id}] received",
    ]
    assert (
        "ForkPoolWorker",
        f"request=chain-story tasks.subscribe[{result.parent.id}]: Task tasks.subscribe[{result.id}] sent to celery",
    ) in told


def test_a_failure_is_logged_once_with_its_traceback_an_expected_one_without(
    run, third_party, sender, web, chapter_env
):
    worker = run(*WORKER)
    worker.wait_for_output(" ready.", timeout=30)
    down = sender.send_task("tasks.subscribe", (address("+down"),))
    # Chapter 9's thumbnail task, told of an upload that is not there: BadImage, which it declares (throws)
    expected = sender.send_task("images.make_thumbnail", (1, "no-such-upload"), queue="celery")
    assert [ended(web, result.id)["state"] for result in (down, expected)] == ["FAILURE", "FAILURE"]
    wait_for(lambda: worker.output.count(" raised ") == 2, 10, "both failures' lines")
    lines = worker.output.splitlines()
    raised = [i for i, line in enumerate(lines) if " raised " in line]
    unexpected, expected_line = sorted(raised, key=lambda i: "unexpected" not in lines[i])
    assert lines[unexpected].endswith(
        f"] Task tasks.subscribe[{down.id}] raised unexpected: HTTPError('503 Server Error: Service Unavailable "
        f"for url: {chapter_env['THIRD_PARTY_URL']}/subscribe')"
    )
    assert lines[expected_line].endswith(
        f"] Task images.make_thumbnail[{expected.id}] raised expected: BadImage(\"no upload named 'no-such-upload'\")"
    )
    # One traceback in all, right under the unexpected failure's line
    assert worker.output.count("Traceback (most recent call last):") == 1
    assert lines[unexpected + 1] == "Traceback (most recent call last):"


def test_no_line_holds_the_brokers_password_or_an_address(run, chapter, third_party, tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    port = free_port()
    server = Process(
        [find_redis_server(), "--port", str(port), "--save", "", "--appendonly", "no", "--requirepass", password],
        chapter,
        CLEAN_ENV,
    )
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "the Redis with a password")
        env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url, "DATABASE_URL": f"sqlite:///{tmp_path}/app.db"}
        migrate = run("alembic", "upgrade", "head", env=env)
        wait_for(lambda: migrate.proc.poll() is not None, 60, "the migrations")
        worker = run(*WORKER, env=env)
        beat = run("celery", "-A", "main.celery", "beat", "--loglevel=info", env=env)
        web_port, flower_port = free_port(), free_port()
        web = run("uvicorn", "main:app", "--port", str(web_port), env=env)
        flower = run("celery", "-A", "main.celery", "flower", f"--port={flower_port}", env=env)
        worker.wait_for_output(" ready.", timeout=30)
        beat.wait_for_output("beat: Acquired lock", timeout=30)
        flower.wait_for_output("Visit me at", timeout=30)
        wait_for(lambda: httpx2.get(f"http://127.0.0.1:{web_port}/").status_code == 200, 30, "the web app")
        answer, user = subscribe_user(f"http://127.0.0.1:{web_port}", "secret-story", kind="")
        assert user["task"]["state"] == "SUCCESS"
        wait_for(lambda: "subscribed': 'a***@example.com'" in worker.output, 10, "the task's last line")
        for process in (migrate, worker, beat, web, flower):
            assert password not in process.output, process.output
            assert user["email"] not in process.output, process.output
        assert user["email"] in third_party.output  # the email service's own print: the address is its business
        assert "redis://:**@127.0.0.1" in worker.output
    finally:
        server.stop()


@pytest.fixture
def with_breakpoint(chapter, tmp_path):
    """The chapter copied, with a breakpoint() at the start of divide, as a reader adds one to debug it."""
    copy = tmp_path / CHAPTER
    shutil.copytree(chapter, copy, ignore=shutil.ignore_patterns("__pycache__", "media", "*.db", "logs", "tests"))
    tasks = copy / "tasks.py"
    tasks.write_text(tasks.read_text().replace("def divide(x, y):\n", "def divide(x, y):\n    breakpoint()\n", 1))
    return copy


def test_rdb_opens_a_session_on_the_port_the_worker_prints(with_breakpoint, sender, web, chapter_env):
    env = chapter_env | {
        "PATH": f"{VENV_BIN}:{chapter_env['PATH']}",
        "PYTHONBREAKPOINT": "celery.contrib.rdb.set_trace",
        "CELERY_RDB_PORT": str(free_port()),
    }
    worker = Process([*WORKER, "--concurrency=1"], with_breakpoint, env)
    try:
        worker.wait_for_output(" ready.", timeout=30)
        result = sender.send_task("tasks.divide", (6, 3))
        worker.wait_for_output("Ready to connect: telnet 127.0.0.1 ", timeout=15)
        port = int(re.search(r"Ready to connect: telnet 127\.0\.0\.1 (\d+)", worker.output)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as session:

            def answer(command=None):
                if command:
                    session.sendall(f"{command}\n".encode())
                read = b""
                while not read.endswith(b"(Pdb) "):
                    read += session.recv(4096)
                return read.decode()

            assert "divide()\n-> sleep(5)" in answer()
            assert answer("p x, y") == "(6, 3)\n(Pdb) "
            assert answer("!y = 2") == "(Pdb) "
            session.sendall(b"c\n")
        assert ended(web, result.id)["result"] == 3.0  # the value set in the session
        assert f"Remote Debugger:{port}: Session with 127.0.0.1:" in worker.output
    finally:
        worker.stop()


def test_eager_mode_stops_at_an_ordinary_breakpoint_in_the_terminal(with_breakpoint, chapter_env):
    env = chapter_env | {"PATH": f"{VENV_BIN}:{chapter_env['PATH']}", "FASTAPI_CONFIG": "testing"}
    shell = subprocess.run(
        [sys.executable, "-c", "from main import divide; print('result:', divide.delay(6, 3).get())"],
        cwd=with_breakpoint,
        env=env,
        input="p x, y\n!y = 3\nc\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert "(Pdb) (6, 3)\n(Pdb) (Pdb) " in shell.stdout
    assert shell.stdout.endswith("result: 2.0\n")


@pytest.mark.timeout(300)
def test_the_chapters_own_suite_passes(chapter):
    """Chapter 10's suite and the tests of this chapter's logging, on SQLite (chapter 10's run it on PostgreSQL)."""
    output = chapter_suite(chapter)
    assert "tests/test_logging.py ....." in output and "61 passed, 2 xfailed in " in output, output


def test_the_compose_file_still_runs_the_procfiles_processes(chapter):
    """Chapter 11's containers, carried: checked, not run again (chapter 11's tests run them)."""
    assert compose_differs_from_procfile(chapter) == []
    assert compose_config_problems(chapter) == []
