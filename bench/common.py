"""What every benchmark needs: its own Redis, the chapter's processes, a load generator, and a table to print.

Every figure a benchmark prints is measured in the same run as the figure it is compared with, so ratios hold on
a busy or slow machine; the absolute numbers are printed beside them with the machine they were measured on.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # processes.py, which the runner and the tests share
import processes  # noqa: E402
from processes import ROOT, free_port, http_answers  # noqa: E402

SHORT = "--short" in sys.argv  # one quick pass, to show that the benchmark still runs (CI)
BIN = Path(sys.executable).parent


def machine():
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {system}"


def wait_until(check, timeout, what):
    try:
        processes.wait_for(check, timeout, what)
    except processes.TimedOut:
        sys.exit(f"bench: no {what} after {timeout} s")
    except processes.Exited as exited:
        sys.exit(f"bench: {exited}")


def chapter_env(redis_url, **extra):
    """A chapter's environment on the benchmark's Redis (processes.chapter_env), with `extra` settings."""
    return processes.chapter_env(None, redis_url, **extra)


@contextmanager
def terminals(chapter, env):
    """processes.Terminals in the chapter folder (its processes' output read and thrown away), for the block."""
    started = processes.Terminals(ROOT / chapter, env)
    try:
        yield started
    finally:
        started.stop()


@contextmanager
def redis_server():
    """A Redis of the benchmark's own, on a free port, keeping nothing."""
    server = processes.find_redis_server() or sys.exit("bench: no redis-server; ./run_all.sh bench installs one")
    redis = processes.RedisServer(server)
    try:
        yield redis.url
    finally:
        redis.stop()


class Url(str):
    """A base URL, and the pid of the process that serves it."""


@contextmanager
def web(chapter, env, app="main:app", open_files=None, flags=()):
    """uvicorn serving the chapter's app, or a variant of it from bench/ (enqueue_app:app...), with no access log
    (it would be measured too) and with `flags` (web_flags()...), under `ulimit -n open_files` if given; its base
    URL (.pid: its process) once it answers."""
    port, folder = free_port(), ROOT / chapter
    command = ["uvicorn", app, "--app-dir", str(ROOT / "bench" if app != "main:app" else folder), *flags]
    if open_files:
        command = ["prlimit", f"--nofile={open_files}", "--", *command]
    with terminals(chapter, env | {"PYTHONPATH": str(folder)}) as started:
        process = started(*command, "--port", str(port), "--no-access-log", keep=False)
        url = Url(f"http://127.0.0.1:{port}")
        url.pid = process.pid
        wait_until(lambda: process.exited() or http_answers(f"{url}/"), 30, f"{chapter}'s web app")
        yield url


def web_flags(chapter):
    """The options of the chapter's Procfile web line (uvicorn's), but where it listens and --reload: the reader's
    server, without the reloader's watching (which would be measured too)."""
    line = next(line for line in processes.procfile(ROOT / chapter) if line.name == "web")
    return [word for word in processes.without(line.argv[2:], "--host", "--port") if word != "--reload"]


@contextmanager
def stand_in(chapter, env):
    """The Procfile's email service's stand-in, at env's THIRD_PARTY_URL, with no access log."""
    with terminals(chapter, env) as started:
        started.line("third_party", extra=["--no-access-log"], keep=False)
        yield


@contextmanager
def worker(chapter, env, *args):
    """The Procfile's worker, logging warnings only (the last --loglevel counts), with `args`, once it answers a
    ping."""
    from celery import Celery

    with terminals(chapter, env) as started:
        extra = ["--loglevel=warning", "--without-mingle", *args]
        process = started.line("worker", extra=extra, wait=False, keep=False)
        control = Celery(broker=env["CELERY_BROKER_URL"]).control
        wait_until(lambda: process.exited() or control.ping(timeout=0.5), 30, "worker")
        yield


def process_tree(pid):
    """pid and the pids of every process it started, and they started, still running, from /proc (Linux)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except OSError:  # gone meanwhile
            continue
    tree = [pid]
    for parent in tree:
        tree += children.get(parent, [])
    return tree


def cpu_seconds(pids):
    """The processor time the processes pids have used, user and system, from /proc (Linux); one gone counts 0."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url, connections, seconds, body=None):
    """Requests a second and latency percentiles (ms) of `wrk` against url; a POST of `body` (JSON) if given."""
    if not shutil.which("wrk"):
        sys.exit(
            "bench: needs wrk, the HTTP load generator: sudo apt install wrk (Debian, Ubuntu), brew install wrk (macOS)"
        )
    script = []
    if body:
        script = ["-s", str(Path(__file__).with_name("post.lua"))]
    env = os.environ | {"WRK_BODY": body or ""}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "--latency", *script, url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    percentiles = {
        int(p): to_ms(v, unit) for p, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"bench: {errors[1]} requests to {url} failed:\n{out}")
    if not percentiles:  # none answered: their latency is beyond the run
        return 0.0, float("inf"), float("inf")
    return rate, percentiles[50], percentiles[99]


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def table(title, header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print()


def post_at_rate(url, body, rate, seconds):
    """POST `body` to url `rate` times a second for `seconds`, whatever the answers take (as users would: they do
    not wait for each other); in a thread of its own. Returns a function that stops it and gives the number answered."""
    import asyncio
    import threading
    from urllib.parse import urlsplit

    split, answered, sent = urlsplit(url), [], []
    request = (
        f"POST {split.path} HTTP/1.1\r\nHost: {split.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()

    async def one():
        reader, writer = await asyncio.open_connection(split.hostname, split.port)
        writer.write(request)
        if (await reader.read()).startswith(b"HTTP/1.1 200"):
            answered.append(1)
        writer.close()

    async def users():
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            sent.append(asyncio.ensure_future(one()))
            await asyncio.sleep(max(0, len(sent) / rate - elapsed))
        await asyncio.sleep(0.5)  # answers already on their way
        for task in sent:
            task.cancel()

    thread = threading.Thread(target=asyncio.run, args=(users(),), daemon=True)
    thread.start()

    def stop():
        thread.join()
        return len(answered)

    return stop
