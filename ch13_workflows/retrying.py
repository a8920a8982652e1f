"""Retries in one place: the base of every task that calls the outside world, the email service or the database
(README: "Retries in one place"). A task gets it with @shared_task(base=Retrying), and has no retry code of its own.
"""

import os

import requests
from celery import Task
from sqlalchemy.exc import OperationalError

from database import unavailable
from ratelimit import RateLimited

COUNTDOWN = int(os.environ.get("RETRY_COUNTDOWN", 5))  # the first wait, in seconds; the tests wait less


class DatabaseUnavailable(ConnectionError):
    """SQLAlchemy's OperationalError as a result can hold it: Celery cannot rebuild SQLAlchemy's own from JSON."""


class Retrying(Task):
    # Worth trying again: the service did not answer (or not in time), answered 5xx or 429; the database did not
    # answer; no token was free. Anything else fails at once: a bad address, a bad image, a bug.
    autoretry_for = (requests.RequestException, OperationalError, RateLimited)
    retry_backoff = COUNTDOWN  # a wait of up to 5 s, then up to 10 s, 20 s...
    retry_backoff_max = 20  # ... never more: a task held for its countdown is handed back in time (config.py)
    retry_jitter = True  # each wait drawn at random below that: tasks that failed together do not retry together
    max_retries = 3  # three more tries of what failed; then its error is the task's FAILURE

    def retry(self, *args, exc=None, **options):
        if isinstance(exc, OperationalError):
            exc = DatabaseUnavailable(unavailable(exc))
        # Waiting is not failing: the database away, or no token yet, is retried for as long as it lasts, and leaves
        # the count of tries as it was. Celery keeps a single count of retries, and no public way to keep two.
        if isinstance(exc, (DatabaseUnavailable, RateLimited)) and not self.request.called_directly:
            self.request.retries -= 1
        return super().retry(*args, exc=exc, **options)
