"""Helpers for every chapter's tests: importing a chapter, reading a task's states, the checks each chapter repeats.

Each returns data (or True) and leaves asserting to the test; the fixtures that use them are in conftest.py.
"""

import importlib
import itertools
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
import redis
import schemathesis
from celery import _state
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

import processes
from processes import Process, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CELERY_FINALIZERS = set(_state._on_app_finalizers)  # Celery's built-in tasks, before any chapter adds its own
CHAPTER_MODULES = {path.stem for path in ROOT.glob("ch[0-9][0-9]_*/*.py")}  # main, tasks, ...
CHAPTER_FOLDERS = {path.name for path in ROOT.glob("ch[0-9][0-9]_*")}
# The environment pytest started in, less what configures a chapter: each test sets what it needs. Read once, here,
# since import_chapter() sets os.environ to a chapter's environment for as long as its module is imported.
CLEAN_ENV = processes.clean_env()
# The PostgreSQL of these machines and CI: trust authentication, user postgres, a database "test"
POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"


def find_redis_server():
    """The Redis server the runner would start: redis-server from PATH, else the embedded one (processes.py)."""
    found = processes.find_redis_server()
    if not found:
        pytest.exit(
            "no redis-server: install Redis (apt install redis-server, brew install redis) or run ./run_all.sh test"
        )
    return found


class RestartableRedis:
    """A Redis of one test's own, on a free port, that keeps its data in an append-only file across a restart."""

    def __init__(self, folder):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = processes.redis_args(find_redis_server(), self.port, folder)
        self.start()

    def start(self):
        self.process = Process(self.args, ROOT, CLEAN_ENV)
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, "Redis")

    def stop(self):
        self.process.stop()


@contextmanager
def import_chapter(folder, env):
    """Import a chapter's main module as `python` inside the folder would, and forget it afterwards.

    Chapters share module names (main, tasks, ...) and Celery keeps global state (the current app, the tasks
    every new app takes on), so all of it is saved before the import and put back after it.
    """
    modules = {name: sys.modules.pop(name, None) for name in CHAPTER_MODULES}
    finalizers, apps = set(_state._on_app_finalizers), set(_state._apps)
    current_app, default_app = getattr(_state._tls, "current_app", None), _state.default_app
    _state._on_app_finalizers.intersection_update(CELERY_FINALIZERS)
    _state._apps.clear()
    _state._set_current_app(None)
    _state.default_app = None
    saved_env = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("main")
    finally:
        sys.path.remove(str(folder))
        for name, module in modules.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
        _state._on_app_finalizers.clear()
        _state._on_app_finalizers.update(finalizers)
        _state._apps.clear()
        _state._apps.update(apps)
        _state._set_current_app(current_app)
        _state.default_app = default_app
        os.environ.clear()
        os.environ.update(saved_env)


def url_answers(url):
    return httpx2.get(url, timeout=2).status_code == 200


class Served(str):
    """A base URL, and the process that serves it (.process)."""


def missing(what, how):
    """Skip a test that needs something this machine lacks, saying how to get it; under CI=true, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}, and CI must run these tests: {how}")
    pytest.skip(f"{what}; to run these tests: {how}")


def run_all(*args, env=None, input="", timeout=120):
    """./run_all.sh with arguments, to completion; `input` is what is typed into it."""
    return subprocess.run(
        [str(ROOT / "run_all.sh"), *args],
        cwd=ROOT,
        env={**CLEAN_ENV, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status_when_done(client, task_id, timeout=15):
    """GET /tasks/{task_id} until the task has left PENDING; its JSON."""

    def done():
        body = client.get(f"/tasks/{task_id}").json()
        return body["state"] != "PENDING" and body

    return wait_for(done, timeout, f"task {task_id}")


def statuses_until_done(client, task_id, timeout=30):
    """Every different JSON of GET /tasks/{task_id}, in order, until SUCCESS or FAILURE."""
    seen = []

    def done():
        body = client.get(f"/tasks/{task_id}").json()
        if not seen or seen[-1] != body:
            seen.append(body)
        return body["state"] in ("SUCCESS", "FAILURE")

    wait_for(done, timeout, f"task {task_id} to finish")
    return seen


def bodies_over_64_kib_are_refused(client, path="/divide", body='{"x": 1, "y": 2}'):
    """The API reads up to 64 KiB of body; one byte more is a 413, before anything is parsed."""
    padded = body[:-1] + " " * (65_536 - len(body)) + body[-1]
    assert client.post(path, content=padded, headers={"content-type": "application/json"}).status_code == 200
    response = client.post(path, content=padded + " ", headers={"content-type": "application/json"})
    return (response.status_code, response.text) == (413, "Content Too Large")


# CI runs schemathesis's generation (its fuzzing phase) at 300 examples an operation and mode; a reader's run, at 40.
FUZZ_EXAMPLES = 300 if os.environ.get("CI") == "true" else 40


def no_request_gets_a_server_error(schema, examples=FUZZ_EXAMPLES):
    """Schemathesis's every check (no 5xx, answers as documented, ...) on each operation of the schema."""
    for operation, mode in itertools.product(schema.get_all_operations(), schemathesis.GenerationMode):

        @given(case=operation.ok().as_strategy(generation_mode=mode))  # valid input, then invalid input
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:  # an operation that takes no input has no invalid input
            assert mode == schemathesis.GenerationMode.NEGATIVE
    return True


def readme_has_current_diff(chapter):
    """The chapter README shows exactly what `./run_all.sh diff` prints for it."""
    diff = run_all("diff", chapter.name)
    assert diff.returncode == 0, diff.stderr
    readme = (chapter / "README.md").read_text()
    return f"```diff\n{diff.stdout}```" in readme


def start_workers(start, names=("one", "two")):
    """Workers started as terminals start them, one for each name (two with one name would be one to Celery), once
    each is ready; start is the `start` fixture."""
    workers = [start("celery", "-A", "main.celery", "worker", "--loglevel=info", "-n", f"{n}@%h") for n in names]
    for worker in workers:
        worker.wait_for_output(" ready.", timeout=60)
    return workers


def address(kind=""):
    """A new address each time, since the stand-in counts the calls of each: ann-1a2b3c+fail2@example.com."""
    return f"ann-{uuid.uuid4().hex[:6]}{kind}@example.com"


def unavailable(chapter_env):
    """The error a task reports when the stand-in answers 503."""
    return f"HTTPError: 503 Server Error: Service Unavailable for url: {chapter_env['THIRD_PARTY_URL']}/subscribe"
