"""The Celery app and the guide's divide task. Broker and results: Redis, unless the environment says otherwise."""
import os
from time import sleep

from celery import Celery

celery = Celery(
    "worker",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)


@celery.task
def divide(x, y):
    sleep(5)  # stands in for slow work, so you can watch the task go from PENDING to SUCCESS
    return x / y
