"""Helpers for every chapter's tests: importing a chapter, reading a task's states, the checks each chapter repeats.

Each returns data (or True) and leaves asserting to the test; the fixtures that use them are in conftest.py. Starting
a chapter's processes, Redis included, is processes.py's (Terminals, RedisServer), shared with the benchmarks.
"""

import importlib
import importlib.util
import itertools
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
import schemathesis
from celery import _state
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig

import processes
from processes import wait_for

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = processes.BIN
# Celery's built-in tasks, which every new app takes on, before any chapter adds its own (@shared_task). Celery has no
# public API to list or forget them: celery._state is private, here and in import_chapter().
CELERY_FINALIZERS = set(_state._on_app_finalizers)
CHAPTER_MODULES = {path.stem for path in ROOT.glob("ch[0-9][0-9]_*/*.py")}  # main, tasks, ...
CHAPTER_FOLDERS = {path.name for path in ROOT.glob("ch[0-9][0-9]_*")}
# The environment pytest started in, less what configures a chapter: each test sets what it needs. Read once, here,
# since import_chapter() sets os.environ to a chapter's environment for as long as its module is imported.
CLEAN_ENV = processes.clean_env()
# The PostgreSQL of these machines and CI: trust authentication, user postgres, a database "test"
POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"


def chapter_tests_module(path):
    """A module of a chapter's own tests (chapter 10 on), imported from its file: a chapter's tests/ is no package."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The images the tests upload, made with Pillow: the very module chapter 10's own suite makes its images with
pictures = chapter_tests_module(ROOT / "ch10_testing" / "tests" / "pictures.py")


def find_redis_server():
    """The Redis server the runner would start: redis-server from PATH, else the embedded one (processes.py)."""
    found = processes.find_redis_server()
    if not found:
        pytest.exit(
            "no redis-server: install Redis (apt install redis-server, brew install redis) or run ./run_all.sh test"
        )
    return found


@contextmanager
def import_chapter(folder, env):
    """Import a chapter's main module as `python` inside the folder would, and forget it afterwards.

    Chapters share module names (main, tasks, ...) and Celery keeps global state: the current app, the default app,
    the apps alive and the @shared_task tasks every new app takes on. Celery has no public API to forget them (an
    app can be made current, not unmade): celery._state, private, is saved before the import and put back after
    it. Unforgotten, one chapter's shared tasks would be taken on by the next chapter's app, beside its own of the
    same names.
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


def on_redis(env, redis_url, **settings):
    """A chapter's environment moved to the Redis at redis_url, its email service's stand-in (if any) to a port of
    its own; then `settings`."""
    service = {"THIRD_PARTY_URL": f"http://127.0.0.1:{processes.free_port()}"} if "THIRD_PARTY_URL" in env else {}
    return env | {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url} | service | settings


def own_database(folder, **settings):
    """The settings of a chapter (8 on) whose database (SQLite) and media folder are in folder, and `settings`."""
    return {"DATABASE_URL": f"sqlite:///{folder}/app.db", "MEDIA_ROOT": str(folder / "media"), **settings}


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


ENDED = ("SUCCESS", "FAILURE")


def statuses_until_done(client, task_id, timeout=30, path="/tasks/{}"):
    """Every different JSON of GET path, in order, until the task's state is SUCCESS or FAILURE. path: the task's
    status (/tasks/{id}), or a resource holding its task's status under "task" (/users/{id}); client: an httpx2
    or FastAPI TestClient, or a base URL."""
    get = client.get if hasattr(client, "get") else lambda path: httpx2.get(f"{client}{path}", timeout=10)
    url, seen = path.format(task_id), []

    def done():
        body = get(url).json()
        if not seen or seen[-1] != body:
            seen.append(body)
        return body.get("task", body)["state"] in ENDED

    wait_for(done, timeout, f"GET {url} to show the task ended")
    return seen


def status_when_done(client, task_id, timeout=30, path="/tasks/{}"):
    """The JSON of GET path once the task has ended (statuses_until_done)."""
    return statuses_until_done(client, task_id, timeout, path)[-1]


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


def avatars_may_be_refused(schema):
    """The schema of an app with chapter 9's upload, whose schema says "a file" and cannot say "an image": valid input
    of the schema may be refused there, with a 422 (a 404 for a user that does not exist)."""
    operation = {"include-path": "/users/{user_id}/avatar"}
    operation["checks"] = {"positive_data_acceptance": {"expected-statuses": ["202", "404", "422"]}}
    config = SchemathesisConfig.from_dict({"operations": [operation]})
    return schemathesis.openapi.from_asgi("/openapi.json", schema.app, config=config)


def readme_has_current_diff(chapter):
    """The chapter README shows exactly what `./run_all.sh diff` prints for it."""
    diff = run_all("diff", chapter.name)
    assert diff.returncode == 0, diff.stderr
    readme = (chapter / "README.md").read_text()
    return f"```diff\n{diff.stdout}```" in readme


def chapter_suite(chapter, *args, env=None):
    """`pytest ARGS` inside the chapter folder (chapter 10 on: its own suite), as a reader runs it in a terminal 80
    columns wide whose PATH starts with .venv/bin, with no DATABASE_URL nor MEDIA_ROOT of the shell the tests started
    in (the suite makes its own), then `env`. What it printed, once it passed."""
    shell = {k: v for k, v in CLEAN_ENV.items() if k not in ("DATABASE_URL", "MEDIA_ROOT")}
    terminal = processes.Terminals(chapter, processes.chapter_env(shell, COLUMNS="80", **(env or {})))
    try:
        process = terminal("pytest", *args)
        wait_for(lambda: process.proc.poll() is not None, 240, f"pytest {' '.join(args)} inside {chapter.name}")
        assert process.stop() == 0, process.output
        return process.output
    finally:
        terminal.stop()


def start_workers(start, names=("one", "two"), env=None):
    """The Procfile's worker, in a terminal for each name (two with one name would be one to Celery), once each is
    ready; start is the `start` fixture, env what to add to the chapter's environment."""
    workers = [start.line("worker", node=f"{name}@%h", env=env, wait=False) for name in names]
    return [start.ready(worker) for worker in workers]


def address(kind=""):
    """A new address each time, since the stand-in counts the calls of each: ann-1a2b3c+fail2@example.com."""
    return f"ann-{uuid.uuid4().hex[:6]}{kind}@example.com"


def unavailable(chapter_env):
    """The error a task reports when the stand-in answers 503."""
    return f"HTTPError: 503 Server Error: Service Unavailable for url: {chapter_env['THIRD_PARTY_URL']}/subscribe"
