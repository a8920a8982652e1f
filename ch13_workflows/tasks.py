"""The tasks: divide, a slow, flaky third-party service called with retries, a list import, a user's subscription."""

import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from time import sleep

import requests
from celery import shared_task
from celery.utils.log import get_task_logger
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from database import Session, unavailable
from models import User

THIRD_PARTY_URL = os.environ.get("THIRD_PARTY_URL", "http://127.0.0.1:8010")
# The guide's 5 s between tries; RETRY_COUNTDOWN changes it (the tests wait less).
COUNTDOWN = int(os.environ.get("RETRY_COUNTDOWN", 5))
logger = get_task_logger(__name__)  # each line with its task's name and id, and its request's id (logs.py)


@shared_task
def divide(x, y):
    # Stands in for slow work, so that you can watch the task go from PENDING to SUCCESS.
    sleep(5)
    quotient = x / y
    # 1e308 / 1e-308 is inf, which JSON cannot store as a result: a clear error instead.
    if math.isinf(quotient):
        raise OverflowError(f"{x} / {y} is too large for a float")
    return quotient


def call_third_party(email):
    response = requests.post(f"{THIRD_PARTY_URL}/subscribe", json={"email": email}, timeout=10)
    # An error status (a 503) raises a RequestException, as a refused connection and a timeout do: the one kind of
    # error the tasks retry.
    response.raise_for_status()
    return response.json()


# Bound (bind=True): the task itself comes first, as self. After the third retry, retry() raises exc instead, and the
# task ends FAILURE with the service's error.
@shared_task(bind=True, max_retries=3)
def subscribe(self, email):
    # Never the address itself (README: "No secret in a line")
    logger.info("calling the email service, try %d", self.request.retries + 1)
    try:
        return call_third_party(email)
    except requests.RequestException as exc:
        raise self.retry(exc=exc, countdown=COUNTDOWN) from exc


@shared_task(bind=True)
def import_list(self, emails):
    """All the calls at once, so that the list takes as long as its slowest call, well within the time limit;
    each PROGRESS is stored, so pushed to the page."""
    failed = []
    with ThreadPoolExecutor(len(emails)) as pool:
        calls = {pool.submit(call_third_party, email): email for email in emails}
        for done, call in enumerate(as_completed(calls), 1):
            try:
                call.result()
            except requests.RequestException as exc:
                failed.append(f"{calls[call]}: {exc}")
            self.update_state(state="PROGRESS", meta={"done": done, "total": len(emails)})
    return {"subscribed": len(emails) - len(failed), "failed": failed}


# The database away: retried every COUNTDOWN seconds until it is back. The service failing: three times, as subscribe.
@shared_task(bind=True, max_retries=None)
def subscribe_user(self, user_id):
    """Subscribe a user once, however often this runs: see
    ch08_database/README.md, "One subscription, however often the task runs".

    It takes the user's id, never the User, and reads the row as it is committed when the task runs."""
    try:
        # NoResultFound here: the task was sent before the user was committed
        # (ch08_database/README.md, "Commit, then send")
        with Session() as session:
            user = session.execute(select(User).where(User.id == user_id)).scalar_one()
        if user.subscribed_at is None:
            logger.info("calling the email service for user %d, try %d", user_id, self.request.retries + 1)
            call_third_party(user.email)
            # A transaction whose first statement writes, which SQLite's busy timeout covers
            # (ch08_database/README.md, "Two writers on SQLite")
            with Session.begin() as session:
                subscribed = update(User).where(User.id == user_id, User.subscribed_at.is_(None))
                session.execute(subscribed.values(subscribed_at=datetime.now(UTC)))
            logger.info("user %d subscribed", user_id)
    except requests.RequestException as exc:
        raise self.retry(exc=exc, countdown=COUNTDOWN, max_retries=3) from exc
    except OperationalError as exc:
        # Stored as a ConnectionError: Celery cannot rebuild SQLAlchemy's own error from JSON
        raise self.retry(exc=ConnectionError(unavailable(exc)), countdown=COUNTDOWN) from exc
    return {"subscribed": user.email}
