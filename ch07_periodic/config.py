"""Settings for each environment, as plain classes; FASTAPI_CONFIG picks one. Celery's keys start with CELERY_.

A worker changes a few for itself as it starts (patient_worker): it waits for Redis, where the API gives up at once.
"""

import logging
import os

from celery.schedules import crontab
from celery.signals import celeryd_init

from scheduler import PatientRedBeatScheduler

logger = logging.getLogger(__name__)
HEALTH_CHECK_INTERVAL = float(os.environ.get("HEALTH_CHECK_INTERVAL", 10))  # seconds; the tests tick every second


class BaseConfig:
    DEBUG = False
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0")
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 1}}  # no Redis: a 503 at once
    CELERY_RESULT_EXTENDED = True  # a result keeps its task's retry count, for GET /tasks/{task_id}
    CELERY_TASK_TRACK_STARTED = True  # the worker stores STARTED when a task starts: it is pushed like the others
    CELERY_TASK_ACKS_LATE = True  # a task leaves Redis when it ends, not when it starts: a crash loses nothing
    CELERY_TASK_REJECT_ON_WORKER_LOST = True  # and a task whose process was killed is queued again at once
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a worker holds only the tasks it runs; the rest wait in Redis
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 60,  # a task a dead worker held is handed out again after 60 s: > any countdown here
        "unacked_restore_throttle": 1,  # and looked for every 10 s, not every 100 s
        "unacked_mutex_expire": 10,  # one worker looks at a time; a killed one's turn lapses in 10 s, not 5 min
    }
    # What beat sends, and when (see README, "The schedule"). Times are UTC: crontab(minute=0, hour=8) is 08:00 UTC.
    CELERY_TIMEZONE = "UTC"
    CELERY_BEAT_SCHEDULE = {
        "check-email-service": {
            "task": "periodic.check_service",
            "schedule": HEALTH_CHECK_INTERVAL,
            # a check that no worker took in time is dropped, not run late (see README, "No pile-up")
            "options": {"expires": HEALTH_CHECK_INTERVAL * 0.8},
        },
        "resend-failed-subscriptions": {
            "task": "periodic.resend_failed",
            "schedule": crontab(),  # every minute, at :00
            "options": {"expires": 50},
        },
    }
    # RedBeat keeps the schedule in Redis, under a lock: one beat sends, any other waits to take over (see README).
    CELERY_BEAT_SCHEDULER = PatientRedBeatScheduler  # RedBeat's, waiting for Redis when it goes away
    CELERY_BEAT_MAX_LOOP_INTERVAL = 5  # beat wakes at least every 5 s: a waiting beat asks for the lock that often
    # RedBeat reads its own settings without the CELERY_ prefix
    REDBEAT_REDIS_URL = CELERY_RESULT_BACKEND  # the Redis of the results, even when the tasks go to RabbitMQ
    REDBEAT_REDIS_OPTIONS = {}  # not the broker's transport options, which RedBeat 2.4 would fall back to
    REDBEAT_LOCK_TIMEOUT = 30  # a beat that dies without letting go of the lock holds it for 30 s at most


@celeryd_init.connect
def patient_worker(conf, **kwargs):  # the worker, unlike the API, waits for Redis as long as it takes,
    conf.result_backend_transport_options = {}
    conf.result_backend_always_retry = True  # to store a result
    conf.task_publish_retry_policy = {  # and to send a retry, which Celery would otherwise drop after 0.6 s
        "max_retries": None,
        "interval_step": 1,
        "interval_max": 2,
        "errback": redis_away,
    }


def redis_away(exc, interval):
    logger.warning("Redis is unreachable (%s): sending again in %g s", exc, interval)


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
