"""Settings for each environment, as plain classes; FASTAPI_CONFIG picks one. Celery's keys start with CELERY_.

A worker changes a few for itself as it starts (patient_worker): it waits for Redis, where the API gives up at once.
"""

import os

from celery.signals import celeryd_init


class BaseConfig:
    DEBUG = False
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0")
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 1}}  # no Redis: a 503 at once


@celeryd_init.connect
def patient_worker(conf, **kwargs):  # the worker, unlike the API, waits for Redis to come back to store a result
    conf.result_backend_transport_options = {}
    conf.result_backend_always_retry = True


class DevelopmentConfig(BaseConfig):
    DEBUG = True  # tracebacks in 500 responses


class ProductionConfig(BaseConfig):
    pass


class TestingConfig(BaseConfig):
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CELERY_TASK_ALWAYS_EAGER = True  # .delay() runs the task right there: no broker, no worker
    CELERY_TASK_STORE_EAGER_RESULT = True  # and keeps its result, for GET /tasks/{task_id}


CONFIGS = {"development": DevelopmentConfig, "production": ProductionConfig, "testing": TestingConfig}


def get_settings():
    name = os.environ.get("FASTAPI_CONFIG", "development")
    if name not in CONFIGS:
        raise ValueError(f"FASTAPI_CONFIG={name!r}: use one of {', '.join(CONFIGS)}")
    return CONFIGS[name]()
