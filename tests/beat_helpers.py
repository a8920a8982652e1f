"""Helpers for the chapters with Celery beat (7 to 9): what the periodic health check publishes, RedBeat's entries, a
second terminal's environment, and the results of the earlier chapters' tasks."""

import json
import time
from contextlib import contextmanager
from datetime import timedelta

import httpx2
import redis

from helpers import address, statuses_until_done

HEALTH_CHANNEL = "email-service-health"  # where each health check is published, as periodic.py names it


@contextmanager
def health_checks(redis_url):
    """Subscribed to the health checks from now on, yields collect(seconds): every check published since the
    subscription (or the collect before) and during `seconds` more, each as the JSON it published."""
    with redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe(HEALTH_CHANNEL)

        def collect(seconds):
            deadline, checks = time.monotonic() + seconds, []
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message:
                    checks.append(json.loads(message["data"]))
            return checks

        yield collect


def checks_during(redis_url, seconds):
    """Every health check published during a window of `seconds` from now."""
    with health_checks(redis_url) as collect:
        return collect(seconds)


def next_run(celery, name):
    """When beat sends the entry `name` next, by what RedBeat keeps in Redis (its last run) and the entry's schedule."""
    from redbeat import RedBeatSchedulerEntry

    entry = RedBeatSchedulerEntry.from_key(f"redbeat:{name}", app=celery)
    seconds = entry.is_due().next  # from the moment it is asked: now must be read after it
    return celery.now() + timedelta(seconds=seconds)


def second_terminal(env, redis_url):
    """A second terminal's environment as the runner's banner tells the reader to set it: REDIS_URL, and no CELERY_
    variable."""
    return {name: value for name, value in env.items() if not name.startswith("CELERY_")} | {"REDIS_URL": redis_url}


def earlier_tasks_results(web):
    """The results of chapter 3's divide (1 / 4) and of chapter 6's import of two addresses, one the service refuses,
    sent through the API of the web app at `web` and run by the chapter's workers."""
    with httpx2.Client(base_url=web) as client:
        divided = client.post("/divide", json={"x": 1, "y": 4}).json()["task_id"]
        imported = client.post("/import", json={"emails": [address(), address("+down")]}).json()["task_id"]
        return [statuses_until_done(client, task_id)[-1]["result"] for task_id in (divided, imported)]
