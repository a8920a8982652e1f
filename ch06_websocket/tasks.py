"""The tasks: divide, a call to a slow, flaky third-party service that retries, and a list import with progress."""

import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from time import sleep

import requests
from celery import shared_task

THIRD_PARTY_URL = os.environ.get("THIRD_PARTY_URL", "http://127.0.0.1:8010")
# The guide's 5 s between tries; RETRY_COUNTDOWN changes it (the tests wait less).
COUNTDOWN = int(os.environ.get("RETRY_COUNTDOWN", 5))


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
