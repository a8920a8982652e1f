"""e. thumbnails: a burst of uploads, then one subscription; how long the subscription waits, with one queue and two.

Run: ./run_all.sh bench thumbnails. Chapter 9's app and its two workers, as its Procfile starts them (each with one
process a core), the stand-in answering after 0.5 s. The subscription is timed alone, then sent right after a burst of
100 uploads, once with the chapter's two queues and once with one queue for every task (bench/one_queue.py).
"""

import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import redis
import requests
from celery import Celery
from PIL import Image

from common import (
    ROOT,
    SHORT,
    chapter_env,
    free_port,
    machine,
    redis_server,
    stand_in,
    table,
    terminals,
    wait_until,
    web,
)

CHAPTER = ROOT / "ch09_thumbnails"
UPLOADS = 20 if SHORT else 100
ROUNDS = 1 if SHORT else 3  # the median of these is printed
SETUPS = {  # the app's module, and the queue each of the two workers consumes
    "two queues": ("main", {"celery": "celery", "images": "images"}),
    "one queue": ("one_queue", {"celery": "celery", "images": "celery"}),
}


def photo():
    """A 4000 x 3000 PNG (a phone photo's 12 megapixels) of 234 kB: its thumbnail takes a tenth of a second to make."""
    size = (4000, 3000)
    gradients = [Image.linear_gradient("L"), Image.radial_gradient("L"), Image.linear_gradient("L").rotate(90)]
    data = io.BytesIO()
    Image.merge("RGB", [band.resize(size) for band in gradients]).save(data, "PNG")
    return data.getvalue()


@contextmanager
def workers(env, app, queues):
    """The Procfile's two workers, each consuming the queue given, once both answer a ping."""
    with terminals(CHAPTER.name, env) as started:
        for name, queue in queues.items():
            command = ["celery", "-A", f"{app}.celery", "worker", "--loglevel=warning", "--without-mingle"]
            started(*command, "-Q", queue, "-n", f"{name}@%h", keep=False)
        control = Celery(broker=env["CELERY_BROKER_URL"]).control
        wait_until(lambda: len(control.ping(timeout=0.5)) == len(queues), 60, "both workers")
        yield


def ended(results, task_ids, since, timeout=120):
    """Wait until every task has succeeded; the seconds from `since` until then."""
    keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]

    def succeeded():
        statuses = [json.loads(meta) for meta in results.mget(keys) if meta]
        failed = [status["result"] for status in statuses if status["status"] == "FAILURE"]
        if failed:
            sys.exit(f"bench: {len(failed)} thumbnails failed: {failed[0]}")
        return len(statuses) == len(keys) and all(status["status"] == "SUCCESS" for status in statuses)

    wait_until(succeeded, timeout, "thumbnails")
    return time.monotonic() - since


def subscription(url, results, timeout=120):
    """POST /users: the seconds until its subscription task starts, and until the user is subscribed."""
    sent = time.monotonic()
    user = {"email": f"bench-{uuid.uuid4().hex[:8]}@example.com", "name": "Bench"}
    key = f"celery-task-meta-{requests.post(f'{url}/users', json=user, timeout=30).json()['task_id']}"
    began = None
    while time.monotonic() - sent < timeout:
        meta = results.get(key)  # STARTED, then SUCCESS: stored by the worker (task_track_started)
        now = time.monotonic()
        if meta and began is None:
            began = now
        if meta and json.loads(meta)["status"] == "SUCCESS":
            return began - sent, now - sent
        time.sleep(0.002)
    sys.exit(f"bench: the subscription did not end within {timeout} s")


def burst(url, user_id, data):
    """UPLOADS uploads, ten at a time, as fast as the API takes them; their task ids."""

    def one(_):
        answer = requests.post(f"{url}/users/{user_id}/avatar", files={"file": ("photo.png", data)}, timeout=60)
        if answer.status_code != 202:
            sys.exit(f"bench: an upload was answered {answer.status_code}: {answer.text}")
        return answer.json()["task_id"]

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(one, range(UPLOADS)))


def measure(env, app, queues, data, results):
    """The subscription's times alone, and right after a burst; and how long the burst's thumbnails took."""
    variant = env | {"PYTHONPATH": str(ROOT / "bench")}
    with web(CHAPTER, variant, f"{app}:app") as url, workers(variant, app, queues):
        user_id = requests.post(f"{url}/users", json={"email": f"up-{app}@example.com", "name": "Up"}).json()["id"]
        alone = [subscription(url, results) for _ in range(ROUNDS)]
        after, drained = [], []
        for _ in range(ROUNDS):
            task_ids = burst(url, user_id, data)
            answered = time.monotonic()
            after.append(subscription(url, results))
            drained.append(ended(results, task_ids, answered))
    return medians(alone), medians(after), drained


def medians(pairs):
    return [statistics.median(pair[i] for pair in pairs) for i in (0, 1)]


def main():
    print(f"Machine: {machine()}")
    data = photo()
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as folder:
        env = chapter_env(
            redis_url,
            DATABASE_URL=f"sqlite:///{folder}/app.db",
            MEDIA_ROOT=f"{folder}/media",
            THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}",
            THIRD_PARTY_DELAY="0.5",
        )
        subprocess.run(["alembic", "upgrade", "head"], cwd=CHAPTER, env=env, check=True, capture_output=True)
        results = redis.Redis.from_url(redis_url)
        with stand_in(CHAPTER, env):
            rows = {name: measure(env, app, queues, data, results) for name, (app, queues) in SETUPS.items()}
    table(
        f"A subscription (the stand-in answers in 0.5 s) alone, and sent right after {UPLOADS} uploads: seconds until "
        f"its task starts / until the user is subscribed, the median of {ROUNDS}",
        [
            "queues",
            "alone",
            f"after {UPLOADS} uploads",
            "subscribed: after / alone",
            "thumbnails done, after the last upload",
        ],
        [
            (name, cell(alone), cell(after), f"{after[1] / alone[1]:.2f}", f"{statistics.median(drained):.1f} s")
            for name, (alone, after, drained) in rows.items()
        ],
    )
    (_, two, _), (_, one, _) = rows["two queues"], rows["one queue"]
    print(f"With one queue the subscription ends {one[1] / two[1]:.1f} times later than with two.")


def cell(times):
    return f"{times[0]:.3f} / {times[1]:.3f}"


if __name__ == "__main__":
    main()
