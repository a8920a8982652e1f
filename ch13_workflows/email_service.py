"""The email service's client, for every task that calls it: a token from the bucket all workers share first (README:
"Rate limits"), then the call; what fails is either worth retrying (retrying.py) or a BadAddress, which is not.
"""

import os
from time import sleep

import requests
from celery import current_app

from ratelimit import RateLimited, take_token

THIRD_PARTY_URL = os.environ.get("THIRD_PARTY_URL", "http://127.0.0.1:8010")
# Calls a second, every worker together: below the service's own limit (the stand-in's is 10), for calls that take
# their token at the end of one second and reach the service in the next. 0: no bucket (to watch Celery's own limit)
RATE = float(os.environ.get("THIRD_PARTY_RATE", 8))
BUCKET = "email-service-rate"  # the key of the bucket, in the Redis of the results


class BadAddress(ValueError):
    """The service refused the address itself (a 4xx): asking again would get the same answer."""


def call_third_party(email, wait=False):
    """Subscribe the address: the service's JSON. No token free: RateLimited, or with `wait`, a wait for one."""
    # The Redis of the results; the testing settings (eager: no workers to share a rate) have none, and no bucket
    redis = getattr(current_app.backend, "client", None)
    while RATE and redis and (seconds := take_token(redis, BUCKET, RATE)):
        if not wait:
            raise RateLimited(f"the email service takes {RATE:g} calls a second: the next in {seconds:.2f} s")
        sleep(seconds)
    response = requests.post(f"{THIRD_PARTY_URL}/subscribe", json={"email": email}, timeout=10)
    # Any other 4xx than a timeout (408) or too many calls (429) is about the request itself
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        raise BadAddress(f"the service refused {email}: {response.status_code} {response.text}")
    response.raise_for_status()  # a 5xx or a 429 is a RequestException, as a refused connection or a timeout are
    return response.json()
