"""Fixtures shared by every chapter's tests: a real Redis, real worker and Flower processes, chapter imports.

A test module names its chapter folder in CHAPTER; the fixtures below work on that chapter. The helpers they use
are in helpers.py, scenarios.py and stacks.py beside this file, and in processes.py at the top of the repository.
"""

import shutil
import subprocess
import urllib.parse
import uuid

import pytest
import redis

# schemathesis.specs.openapi.schemas is imported now, not at the first schema deep in a session, where pytest's
# rewriting of this plugin module can fail on CPython 3.11.7 ("SystemError: AST constructor recursion depth mismatch").
import schemathesis.specs.openapi.schemas  # noqa: F401

import processes
from helpers import (
    CLEAN_ENV,
    POSTGRESQL,
    ROOT,
    Served,
    find_redis_server,
    import_chapter,
    missing,
)
from processes import RedisServer, Terminals, copy_of_the_repository, free_port, procfile, wait_for
from stacks import Stack


@pytest.fixture(scope="session")
def redis_url():
    """A Redis server of the test session's own, on a free port: never the one on 6379."""
    server = RedisServer(find_redis_server())
    yield server.url
    server.stop()


@pytest.fixture
def restartable_redis(tmp_path):
    """A Redis of one test's own, on a free port, that keeps its data across .stop() and .start() (.url, .port)."""
    server = RedisServer(find_redis_server(), folder=tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chapter(request):
    """The folder of the test module's chapter."""
    return ROOT / request.module.CHAPTER


@pytest.fixture(scope="module")
def chapter_env(redis_url, chapter):
    """The environment a reader's terminal would have: the venv first on PATH, Celery pointed at the test Redis.

    From chapter 5 on, the email service's stand-in is on a free port, and it and the retries wait 1 s, not 5.
    """
    env = processes.chapter_env(CLEAN_ENV, redis_url)
    if (chapter / "third_party.py").exists():
        env.update(THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1", RETRY_COUNTDOWN="1")
    redis.Redis.from_url(redis_url).flushall()  # nothing left over from another chapter's tests
    return env


@pytest.fixture(scope="module")
def main(chapter, chapter_env):
    """The chapter's main module, imported in this process with the test Redis configured."""
    with import_chapter(chapter, chapter_env) as module:
        yield module


@pytest.fixture(scope="module")
def start(chapter, chapter_env):
    """start(*args, env=None): run a reader's command inside the chapter folder; start.line(NAME, port=None,
    node=None, ...): the Procfile's line NAME, once ready (processes.Terminals). Everything started is stopped
    afterwards."""
    terminals = Terminals(chapter, chapter_env)
    yield terminals
    terminals.stop()


@pytest.fixture(scope="module")
def worker(start):
    """The Procfile's worker, run inside the chapter folder, once it is ready for tasks."""
    return start.line("worker")


@pytest.fixture(scope="module")
def flower(start, worker):
    """The Procfile's Flower on a free port; returns its base URL once it answers."""
    return start.line("flower", port=free_port()).url


@pytest.fixture(scope="module")
def third_party(start, chapter_env):
    """The email service's stand-in, the Procfile's third_party, on the port THIRD_PARTY_URL names."""
    return start.line("third_party")


@pytest.fixture(scope="module")
def web(start):
    """The Procfile's web app (`uvicorn main:app --reload`) on a free port; its base URL (.process) once it answers."""
    process = start.line("web", port=free_port())
    url = Served(process.url)
    url.process = process
    return url


@pytest.fixture(scope="module")
def migrated(start):
    """The steps of the Procfile's web line (`alembic upgrade head`, from chapter 8 on) on the empty database, as
    the reader runs them before the web app; their output."""
    steps = next(line.steps for line in procfile(start.folder) if line.name == "web")
    process = start("sh", "-c", steps)
    wait_for(lambda: process.proc.poll() is not None, 60, steps)
    assert process.stop() == 0, process.output
    return process.output


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A virtual host of the test session's own on the RabbitMQ at 127.0.0.1:5672 (guest/guest), deleted after."""
    import kombu

    how = (
        "sudo apt install rabbitmq-server (Debian, Ubuntu) or brew install rabbitmq (macOS);"
        " rabbitmqctl must work for you"
    )
    try:
        kombu.Connection("amqp://guest:guest@127.0.0.1:5672//", connect_timeout=3).ensure_connection(max_retries=1)
    except Exception:
        missing("no RabbitMQ at 127.0.0.1:5672", how)
    vhost = f"tests-{uuid.uuid4().hex[:8]}"
    if (
        not shutil.which("rabbitmqctl")
        or subprocess.run(["rabbitmqctl", "add_vhost", vhost], capture_output=True).returncode
    ):
        missing("rabbitmqctl cannot make a virtual host here", how)
    subprocess.run(
        ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], capture_output=True, check=True
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


@pytest.fixture(scope="session")
def postgresql():
    """new(): a database of the test session's own on the PostgreSQL at 127.0.0.1:5432, its URL; dropped after."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRESQL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        missing(
            "no PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, a database test)",
            "sudo apt install postgresql (Debian, Ubuntu) or brew install postgresql (macOS)",
        )
    names = []

    def new():
        names.append(f"tests_{uuid.uuid4().hex[:8]}")
        admin.execute(f'CREATE DATABASE "{names[-1]}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{names[-1]}"

    yield new
    for name in names:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # its connections closed first
    admin.close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives the Chromium installed on the machine (browser downloads are not needed)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        missing("no Chromium", "sudo apt install chromium (Debian, Ubuntu), or brew install --cask chromium (macOS)")
    return {**browser_type_launch_args, "executable_path": chromium}


@pytest.fixture(scope="module")
def api_schema(chapter, chapter_env, redis_url):
    """The chapter's OpenAPI schema, on an app whose tasks go to a Redis database no worker reads, emptied after."""
    unread = redis_url.rsplit("/", 1)[0] + "/15"
    with import_chapter(chapter, {**chapter_env, "CELERY_BROKER_URL": unread, "CELERY_RESULT_BACKEND": unread}) as main:
        yield schemathesis.openapi.from_asgi("/openapi.json", main.app)
    redis.Redis.from_url(unread).flushdb()


@pytest.fixture
def repository_copy(tmp_path):
    """The runner and the chapters copied, .venv shared: a test that saves a chapter's file reloads only its own
    stack."""
    return copy_of_the_repository(tmp_path)


@pytest.fixture
def stack():
    """stack(chapter, piped_to=None, root=ROOT, **env): ./run_all.sh chapter, stopped with Ctrl+C at the end if it
    still runs."""
    stacks = []

    def start(chapter, piped_to=None, root=ROOT, **env):
        stacks.append(Stack(chapter, piped_to, root, **env))
        return stacks[-1]

    yield start
    for running in stacks:
        if running.process.running() and not running.hung_up:
            running.ctrl_c()
        port = urllib.parse.urlsplit(running.env.get("REDIS_URL", "")).port
        if port:
            shutil.rmtree(running.root / ".redis" / str(port), ignore_errors=True)  # the data of a Redis it started
