"""The tasks: divide, a call to a slow, flaky third-party service that retries, and a list import with progress."""

import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from time import sleep

import requests
from celery import shared_task

THIRD_PARTY_URL = os.environ.get("THIRD_PARTY_URL", "http://127.0.0.1:8010")
COUNTDOWN = int(os.environ.get("RETRY_COUNTDOWN", 5))  # the guide's 5 s between tries; the tests wait less


@shared_task
def divide(x, y):
    sleep(5)  # stands in for slow work, so you can watch the task go from PENDING to SUCCESS
    quotient = x / y
    if math.isinf(quotient):  # 1e308 / 1e-308: JSON has no Infinity to store it as
        raise OverflowError(f"{x} / {y} is too large for a float")
    return quotient


def call_third_party(email):
    response = requests.post(f"{THIRD_PARTY_URL}/subscribe", json={"email": email}, timeout=10)
    response.raise_for_status()  # a 503 is a RequestException, as a refused connection or a timeout are
    return response.json()


# Bound: the task itself comes first, as self. After its third retry, retry() raises exc: the task's FAILURE.
@shared_task(bind=True, max_retries=3)
def subscribe(self, email):
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
