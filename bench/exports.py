"""f. exports: 10,000 users exported in chunks, by one worker and by two, against one task that writes them all; and
what a chord costs over a group.

Run: ./run_all.sh bench exports. Chapter 13's app, its users added by `python seed.py`, each `exports` worker as the
Procfile starts it but with one process (--concurrency=1), so that two workers are twice the processes; the chunks take
no pretended time (EXPORT_CHUNK_DELAY=0): what is measured is reading, checking and writing the users. The export is
timed from POST /exports to its SUCCESS. Then 1,000 tasks that do nothing (Celery's own celery.accumulate), sent as a
group, then as a chord with one more as its callback, timed until the last of them has ended.
"""

import json
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime

import redis
import requests
from celery import Celery, chord, group

from common import ROOT, SHORT, chapter_env, machine, redis_server, table, terminals, wait_until, web

CHAPTER = ROOT / "ch13_workflows"
USERS = 1_000 if SHORT else 10_000
ROUNDS = 1 if SHORT else 5  # the median of these is printed
TASKS = 100 if SHORT else 1_000  # the group's, and the chord's header


@contextmanager
def workers(env, count, line="exports"):
    """`count` workers of the Procfile's `line`, one process each, once every one answers a ping."""
    with terminals(CHAPTER.name, env) as started:
        for n in range(count):
            extra = ["--loglevel=warning", "--without-mingle", "-c", "1"]
            started.line(line, node=f"{line}{n}@%h", extra=extra, wait=False, keep=False)
        control = Celery(broker=env["CELERY_BROKER_URL"]).control
        wait_until(lambda: len(control.ping(timeout=0.5)) == count, 60, f"{count} workers")
        yield


def status(results, task_id):
    meta = results.get(f"celery-task-meta-{task_id}")
    return json.loads(meta) if meta else {"status": "PENDING"}


def export(url, results, chunk_size):
    """POST /exports, then wait for its SUCCESS: the seconds between."""
    sent = time.monotonic()
    task_id = requests.post(f"{url}/exports", json={"chunk_size": chunk_size}, timeout=30).json()["task_id"]

    def ended():
        if status(results, task_id)["status"] == "FAILURE":
            sys.exit(f"bench: the export failed: {status(results, task_id)['result']}")
        return status(results, task_id)["status"] == "SUCCESS"

    wait_until(ended, 300, "the export")
    return time.monotonic() - sent


def median(times):
    return sorted(times)[len(times) // 2]


def exports(url, results, control, second):
    """Each round, the three ways one after the other, so that a machine busy with something else slows them alike:
    the median of each. The second worker is told to stop taking exports, then to take them again."""
    times = {
        "1 worker, chunks of 500": [],
        "1 worker, one task for all (one chunk)": [],
        "2 workers, chunks of 500": [],
    }
    export(url, results, 500)  # once first, untimed: the workers' processes connect to Redis and the database
    for _ in range(ROUNDS):
        control.cancel_consumer("exports", destination=[second], reply=True)
        times["1 worker, chunks of 500"].append(export(url, results, 500))
        times["1 worker, one task for all (one chunk)"].append(export(url, results, USERS))
        control.add_consumer("exports", destination=[second], reply=True)
        times["2 workers, chunks of 500"].append(export(url, results, 500))
    return [(name, median(seconds)) for name, seconds in times.items()]


def canvas(redis_url, results, as_chord):
    """TASKS tasks that do nothing, as a group or as a chord: the seconds from sending them until the last one (the
    callback) ended, by the date_done the worker stored with each result (polled slowly, so as not to slow them).
    The group is sent by an app with no result backend, which would listen for each task's result; the chord needs
    one, to record its size, and listens for its callback's only."""
    app = Celery(broker=redis_url, backend=redis_url if as_chord else None)
    header = [app.signature("celery.accumulate", args=(n,)) for n in range(TASKS)]
    sent = datetime.now(UTC)
    if as_chord:
        last = [chord(header, app.signature("celery.accumulate")).apply_async().id]
    else:
        last = [result.id for result in group(header).apply_async().results]
    keys = [f"celery-task-meta-{task_id}" for task_id in last]
    wait_until(lambda: time.sleep(0.5) or all(results.mget(keys)), 300, "the tasks")
    done = max(datetime.fromisoformat(json.loads(meta)["date_done"]) for meta in results.mget(keys))
    return (done.replace(tzinfo=UTC) - sent).total_seconds()


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as folder:
        env = chapter_env(
            redis_url, DATABASE_URL=f"sqlite:///{folder}/app.db", MEDIA_ROOT=f"{folder}/media", EXPORT_CHUNK_DELAY="0"
        )
        for command in (["alembic", "upgrade", "head"], ["python", "seed.py", str(USERS)]):
            subprocess.run(command, cwd=CHAPTER, env=env, check=True, capture_output=True)
        results = redis.Redis.from_url(redis_url)
        control = Celery(broker=redis_url).control
        with web(CHAPTER.name, env) as url, workers(env, 2):
            rows = exports(url, results, control, f"exports1@{socket.gethostname()}")
        with workers(env, 1, line="worker"):
            canvas(redis_url, results, False)  # once first, untimed, as for the exports
            rounds = [(canvas(redis_url, results, False), canvas(redis_url, results, True)) for _ in range(ROUNDS)]
        group_time, chord_time = (median([pair[i] for pair in rounds]) for i in (0, 1))
    one = rows[0][1]
    table(
        f"An export of {USERS:,} users, from POST /exports to its SUCCESS, the median of {ROUNDS}",
        ["how", "seconds", "against 1 worker"],
        [(name, f"{seconds:.2f}", f"{one / seconds:.2f}") for name, seconds in rows],
    )
    table(
        f"{TASKS:,} tasks that do nothing, on one worker of one process, until the last ended (the median of {ROUNDS})",
        ["sent as", "seconds", "per task (ms)"],
        [
            ("a group", f"{group_time:.2f}", f"{group_time / TASKS * 1000:.2f}"),
            ("a chord (the same, then a callback)", f"{chord_time:.2f}", f"{chord_time / TASKS * 1000:.2f}"),
        ],
    )
    extra = (chord_time - group_time) / TASKS * 1000
    print(f"The chord took {chord_time / group_time:.2f} times the group's time, {extra:+.2f} ms a task.")


if __name__ == "__main__":
    main()
