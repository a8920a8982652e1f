"""d. start-up: from `./run_all.sh CHAPTER` to its banner, from saving a file to the restarted worker, from Ctrl+C to
exit.

Run: ./run_all.sh bench startup. With .venv made already and a Redis running; in a copy of the repository, so that
the edit that reloads the worker reaches no other process.
"""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, SHORT, cpu_seconds, free_port, machine, processes, redis_server, table

CHAPTERS = sorted(path.name for path in ROOT.glob("ch[0-9][0-9]_*"))
MEASURED = ["ch01_hello", "ch06_websocket"] if SHORT else CHAPTERS
RUNS = 1 if SHORT else 2


class Run:
    """./run_all.sh CHAPTER with its output read as it comes, each line with the time it came."""

    def __init__(self, folder, chapter, redis_url):
        self.tag = f"bench-{os.getpid()}-{time.monotonic()}"
        env = processes.clean_env() | {
            "REDIS_URL": redis_url,
            "WEB_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "THIRD_PARTY_PORT": str(free_port()),
            "RUN_ALL_TAG": self.tag,
        }
        self.lines, self.start = [], time.perf_counter()
        self.process = processes.Process(
            ["./run_all.sh", chapter],
            folder,
            env,
            keep=False,
            on_line=lambda line: self.lines.append((time.perf_counter(), line)),
        )

    def when(self, text, count=1, name=None, timeout=120):
        """Seconds from the start to the count-th line holding text (of the process NAME, if given)."""

        def seen():
            lines = [(at, line) for at, line in list(self.lines) if text in line]
            return [at for at, line in lines if name is None or line.split(" | ")[0].strip() == name]

        try:
            processes.wait_for(lambda: len(seen()) >= count, timeout, repr(text))
        except processes.TimedOut:
            output = "".join(line for _, line in self.lines)
            raise SystemExit(f"bench: no {text!r} after {timeout} s:\n{output}") from None
        return seen()[count - 1] - self.start

    def cpu_seconds(self):
        """The processor time that the processes it started, still running, have used so far."""
        return cpu_seconds(processes.tagged(self.tag))


def reloaded(chapter):
    """What saving tasks.py restarts, and the line each says once ready again: the Procfile's workers, or the web
    app, whose worker lives inside it (chapter 1)."""
    workers = [line.name for line in processes.procfile(ROOT / chapter) if line.worker]
    return {name: " ready." for name in workers} or {"web": "Application startup complete"}


def measure(folder, chapter, redis_url):
    """Seconds from the command to the banner, the processor time until then, from saving tasks.py to each
    restarted process ready again, and from Ctrl+C to exit."""
    run = Run(folder, chapter, redis_url)
    banner = run.when("Press Ctrl+C to stop everything.")
    cpu = run.cpu_seconds()
    saved = time.perf_counter() - run.start
    os.utime(folder / chapter / "tasks.py")
    ready = {name: run.when(text, count=2, name=name) - saved for name, text in reloaded(chapter).items()}
    pressed = time.perf_counter() - run.start
    os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl+C does
    run.process.proc.wait(120)
    return banner, cpu, ready, time.perf_counter() - run.start - pressed


def median(values):
    return sorted(values)[len(values) // 2]


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        folder = processes.copy_of_the_repository(Path(tmp))
        subprocess.run(["./run_all.sh", "diff", "3"], cwd=folder, capture_output=True, check=True)  # .venv is current
        rows = []
        for chapter in MEASURED:
            runs = [measure(folder, chapter, redis_url) for _ in range(RUNS)]
            banner, cpu, stop = (median([run[i] for run in runs]) for i in (0, 1, 3))
            ready = {name: median([run[2][name] for run in runs]) for name in runs[0][2]}
            each = ", ".join(
                f"{seconds:.1f}" if len(ready) == 1 else f"{name} {seconds:.1f}" for name, seconds in ready.items()
            )
            rows.append((chapter, f"{banner:.1f}", f"{cpu:.1f} ({cpu / os.cpu_count():.1f})", each, f"{stop:.1f}"))
    table(
        f"Seconds, the median of {RUNS} run(s) each",
        [
            "chapter",
            "command to banner",
            f"processor time until then (over {os.cpu_count()} cores)",
            "save to each worker ready again (ch01: the web app, its worker inside)",
            "Ctrl+C to exit",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
