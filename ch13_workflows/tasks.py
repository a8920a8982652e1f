"""The tasks: divide, a list import, and the subscriptions to the email service, which retry as retrying.py says."""

import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from time import sleep

import requests
from celery import shared_task
from celery.utils.log import get_task_logger
from sqlalchemy import select, update

from database import Session
from email_service import BadAddress, call_third_party
from models import User
from retrying import Retrying

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


# Retried as retrying.py says; a bad address is a FAILURE at once, logged without a traceback (throws). No line holds
# the address (ch12_logging/README.md, "No secret in a line").
@shared_task(bind=True, base=Retrying, throws=(BadAddress,))
def subscribe(self, email):
    logger.info("calling the email service, try %d", self.request.retries + 1)
    return call_third_party(email)


@shared_task(bind=True)
def import_list(self, emails):
    """All the calls at once, each as soon as the rate allows; each PROGRESS is stored, so pushed to the page."""
    failed = []
    with ThreadPoolExecutor(len(emails)) as pool:
        calls = {pool.submit(call_third_party, email, wait=True): email for email in emails}
        for done, call in enumerate(as_completed(calls), 1):
            try:
                call.result()
            except (requests.RequestException, BadAddress) as exc:
                failed.append(f"{calls[call]}: {exc}")
            self.update_state(state="PROGRESS", meta={"done": done, "total": len(emails)})
    return {"subscribed": len(emails) - len(failed), "failed": failed}


@shared_task(bind=True, base=Retrying, throws=(BadAddress,))
def subscribe_user(self, user_id):
    """Once, however often it runs; NoResultFound: sent before the commit. See ch08_database/README.md,
    "One subscription, however often the task runs", "Commit, then send", "Two writers on SQLite"."""
    with Session() as session:
        user = session.execute(select(User).where(User.id == user_id)).scalar_one()
    if user.subscribed_at is None:
        logger.info("calling the email service for user %d, try %d", user_id, self.request.retries + 1)
        call_third_party(user.email)
        with Session.begin() as session:
            subscribed = update(User).where(User.id == user_id, User.subscribed_at.is_(None))
            session.execute(subscribed.values(subscribed_at=datetime.now(UTC)))
        logger.info("user %d subscribed", user_id)
    return {"subscribed": user.email}
