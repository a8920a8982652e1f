"""A Celery app that needs no server: an in-memory broker unless CELERY_BROKER_URL says otherwise."""

import os

from celery import Celery

celery = Celery(
    "worker",
    broker=os.environ.get("CELERY_BROKER_URL", "memory://localhost/"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://"),
    # memory:// looks at its queue once a second by default; a hundred times a second, a task starts at once.
    broker_transport_options={"polling_interval": 0.01},
)


@celery.task
def add(x, y):
    return x + y
