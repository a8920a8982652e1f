"""d. start-up: from `./run_all.sh CHAPTER` to its banner, from saving a file to the restarted worker, from Ctrl+C to
exit.

Run: ./run_all.sh bench startup. With .venv made already and a Redis running; in a copy of the repository, so that
the edit that reloads the worker reaches no other process.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, SHORT, free_port, machine, redis_server, table

CHAPTERS = sorted(path.name for path in ROOT.glob("ch[0-9][0-9]_*"))
MEASURED = ["ch01_hello", "ch06_websocket"] if SHORT else CHAPTERS
RUNS = 1 if SHORT else 2


def copy_of_the_repository(folder):
    for name in ["run_all.sh", "run_all.py", "processes.py", "requirements.txt", "requirements-dev.txt", *CHAPTERS]:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, folder / name)
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return folder


class Run:
    """./run_all.sh CHAPTER with its output read as it comes, each line with the time it came."""

    def __init__(self, folder, chapter, redis_url):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "THIRD_PARTY_"))}
        self.tag = f"bench-{os.getpid()}-{time.monotonic()}"
        env |= {
            "REDIS_URL": redis_url,
            "WEB_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "THIRD_PARTY_PORT": str(free_port()),
            "RUN_ALL_TAG": self.tag,
        }
        self.start = time.perf_counter()
        self.process = subprocess.Popen(
            ["./run_all.sh", chapter],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines = []
        threading.Thread(
            target=lambda: self.lines.extend((time.perf_counter(), line) for line in self.process.stdout), daemon=True
        ).start()

    def when(self, text, count=1, timeout=120):
        """Seconds from the start to the count-th line holding text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [at for at, line in list(self.lines) if text in line]
            if len(seen) >= count:
                return seen[count - 1] - self.start
            time.sleep(0.01)
        raise SystemExit(f"bench: no {text!r} after {timeout} s:\n{''.join(line for _, line in self.lines)}")

    def cpu_seconds(self):
        """The processor time that the processes it started, still running, have used so far."""
        ticks = 0
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if f"RUN_ALL_TAG={self.tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                continue
        return ticks / os.sysconf("SC_CLK_TCK")


def measure(folder, chapter, redis_url):
    run = Run(folder, chapter, redis_url)
    banner = run.when("Press Ctrl+C to stop everything.")
    cpu = run.cpu_seconds()
    ready = (
        " ready." if chapter != "ch01_hello" else "Application startup complete"
    )  # ch01: the worker is in the web app
    saved = time.perf_counter() - run.start
    os.utime(folder / chapter / "tasks.py")
    reload = run.when(ready, count=2) - saved
    pressed = time.perf_counter() - run.start
    os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl+C does
    run.process.wait(120)
    return banner, cpu, reload, time.perf_counter() - run.start - pressed


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        folder = copy_of_the_repository(Path(tmp))
        subprocess.run(["./run_all.sh", "diff", "3"], cwd=folder, capture_output=True, check=True)  # .venv is current
        rows = []
        for chapter in MEASURED:
            runs = sorted(measure(folder, chapter, redis_url) for _ in range(RUNS))
            medians = (sorted(values)[len(values) // 2] for values in zip(*runs, strict=True))
            banner, cpu, reload, stop = medians
            rows.append(
                (chapter, f"{banner:.1f}", f"{cpu:.1f} ({cpu / os.cpu_count():.1f})", f"{reload:.1f}", f"{stop:.1f}")
            )
    table(
        f"Seconds, the median of {RUNS} run(s) each",
        [
            "chapter",
            "command to banner",
            f"processor time until then (over {os.cpu_count()} cores)",
            "save to worker ready",
            "Ctrl+C to exit",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
