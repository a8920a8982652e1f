"""How long a chapter's settings let Redis's broker hold a task unacknowledged, read from the chapter itself."""

import sys

from helpers import import_chapter


def longest_hold(chapter, env):
    """The longest a task can run, its longest countdown before that, and the visibility_timeout, in seconds, with
    the settings a reader gets (env without the tests' shorter RETRY_COUNTDOWN)."""
    with import_chapter(chapter, {k: v for k, v in env.items() if k != "RETRY_COUNTDOWN"}) as main:
        return hold(main, sys.modules["tasks"])


def hold(main, tasks):
    conf = main.celery.conf
    chapter_tasks = [task for name, task in main.celery.tasks.items() if name.startswith("tasks.")]
    run = max(task.time_limit or conf.task_time_limit for task in chapter_tasks)
    # subscribe waits COUNTDOWN; a task that backs off waits retry_backoff * 2**n before its n+1th retry
    countdown = max(
        [tasks.COUNTDOWN]
        + [
            min(task.retry_backoff * 2 ** (task.max_retries - 1), getattr(task, "retry_backoff_max", 600))
            for task in chapter_tasks
            if getattr(task, "retry_backoff", False)
        ]
    )
    return run, countdown, conf.broker_transport_options["visibility_timeout"]
