"""The Celery app and the guide's divide task. Broker and results: Redis, unless the environment says otherwise."""

import math
import os
from time import sleep

from celery import Celery
from celery.signals import celeryd_init

# Redis at REDIS_URL, the variable run_all.sh prints, unless CELERY_BROKER_URL or CELERY_RESULT_BACKEND names another
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

celery = Celery(
    "worker",
    broker=os.environ.get("CELERY_BROKER_URL", REDIS_URL),
    backend=os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL),
    # The API tries Redis once more, not for 20 s: no Redis is a 503 at once. A worker waits (patient_worker).
    result_backend_transport_options={"retry_policy": {"max_retries": 1}},
)


@celeryd_init.connect
def patient_worker(conf, **kwargs):
    """A worker, unlike the API, waits for Redis to come back to store a result: redis-py's default retry policy in
    place of the API's one retry (above), and a result stored however long Redis is away."""
    conf.result_backend_transport_options = {}
    conf.result_backend_always_retry = True


@celery.task
def divide(x, y):
    sleep(5)  # stands in for slow work, so you can watch the task go from PENDING to SUCCESS
    quotient = x / y
    if math.isinf(quotient):  # 1e308 / 1e-308: JSON has no Infinity to store it as
        raise OverflowError(f"{x} / {y} is too large for a float")
    return quotient
