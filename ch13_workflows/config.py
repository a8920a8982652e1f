"""Settings per environment, as plain classes (FASTAPI_CONFIG picks one); create_celery() hands Celery its CELERY_ ones.

A worker changes a few for itself as it starts (patient_worker): it waits for Redis, where the API gives up at once.
"""

import logging
import os
from pathlib import Path

from celery import Celery
from celery.schedules import crontab
from celery.signals import celeryd_init

from scheduler import PatientRedBeatScheduler

logger = logging.getLogger(__name__)
# Redis at REDIS_URL, the variable run_all.sh prints, unless CELERY_BROKER_URL or CELERY_RESULT_BACKEND names another
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
HEALTH_CHECK_INTERVAL = float(os.environ.get("HEALTH_CHECK_INTERVAL", 10))  # seconds; the tests tick every second


class BaseConfig:
    DEBUG = False
    # SQLite, in a file beside this one, unless DATABASE_URL names another: postgresql+psycopg://user@host/name
    DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{Path(__file__).with_name('app.db')}")
    # uploads and thumbnails, in a folder beside this one: the web app and the images worker must share it
    MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", Path(__file__).with_name("media")))
    # How the lines look (text, or json: one object a line), where they go besides the terminal (a file, rotated), and
    # the web's level (a Celery process's is its --loglevel): logs.py
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
    LOG_FILE = os.environ.get("LOG_FILE")
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
    CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL)
    # The API tries Redis once more, where Celery would go on for 20 s: with no Redis, a request gets its 503 at
    # once. A worker waits for Redis as long as it takes (patient_worker, below).
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 1}}
    # Each stored state keeps the task's retry count, for GET /tasks/{task_id} to report.
    CELERY_RESULT_EXTENDED = True
    # A worker stores STARTED as it starts a task, so that state is pushed too.
    CELERY_TASK_TRACK_STARTED = True
    # A task leaves Redis when it ends, not when it starts, so a crash loses nothing; a task whose process was killed
    # is queued again at once; a worker holds only the tasks it runs, the rest wait in Redis.
    CELERY_TASK_ACKS_LATE = True
    CELERY_TASK_REJECT_ON_WORKER_LOST = True
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    # Image work and exports each have a queue, and a worker, of their own
    CELERY_TASK_ROUTES = {"images.*": {"queue": "images"}, "exports.*": {"queue": "exports"}}
    # No task runs past these, so none is held past the visibility_timeout below. At 30 s SoftTimeLimitExceeded is
    # raised in the task, which ends FAILURE; at 35 s its process is killed (ch05_retry/README.md, "Time limits").
    CELERY_TASK_SOFT_TIME_LIMIT = 30
    CELERY_TASK_TIME_LIMIT = 35
    # How a dead worker's tasks come back (ch05_retry/README.md, "What a retry survives"). Redis hands a task out
    # again 60 s after a worker took it, longer than the time limit plus the longest countdown. Workers look for such
    # tasks every 10 s (the interval times the throttle; kombu's default is 10 s times 10), one at a time, under a
    # lock that lapses after 10 s, rather than 5 minutes, when its worker dies.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 60,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 10,
    }
    # What beat sends, and when (ch07_periodic/README.md, "The schedule"). Times are UTC: crontab(minute=0, hour=8) is
    # 08:00 UTC.
    CELERY_TIMEZONE = "UTC"
    CELERY_BEAT_SCHEDULE = {
        "check-email-service": {
            "task": "periodic.check_service",
            "schedule": HEALTH_CHECK_INTERVAL,
            # a check that no worker took in time is dropped, not run late (ch07_periodic/README.md, "No pile-up")
            "options": {"expires": HEALTH_CHECK_INTERVAL * 0.8},
        },
        "resend-failed-subscriptions": {
            "task": "periodic.resend_failed",
            "schedule": crontab(),  # every minute, at :00
            "options": {"expires": 50},
        },
    }
    # RedBeat keeps the schedule in Redis, under a lock: one beat sends, any other waits to take over
    # (ch07_periodic/README.md, "Once per tick").
    CELERY_BEAT_SCHEDULER = PatientRedBeatScheduler  # RedBeat's, waiting for Redis when it goes away
    CELERY_BEAT_MAX_LOOP_INTERVAL = 5  # beat wakes at least every 5 s: a waiting beat asks for the lock that often
    CELERY_REDBEAT_REDIS_URL = CELERY_RESULT_BACKEND  # the Redis of the results, even when the tasks go to RabbitMQ
    CELERY_REDBEAT_REDIS_OPTIONS = {}  # not the broker's transport options, which RedBeat 2.4 would fall back to
    CELERY_REDBEAT_LOCK_TIMEOUT = 30  # a beat that dies without letting go of the lock holds it for 30 s at most


@celeryd_init.connect
def patient_worker(conf, **kwargs):
    """A worker, unlike the API, waits for Redis as long as it takes: to store a result (redis-py's default retry
    policy in place of the API's one retry, in BaseConfig), and to send a retry, which Celery would drop after 0.6 s."""
    conf.result_backend_transport_options = {}
    conf.result_backend_always_retry = True
    conf.task_publish_retry_policy = {"max_retries": None, "interval_step": 1, "interval_max": 2, "errback": redis_away}


def redis_away(exc, interval):
    logger.warning("Redis is unreachable (%s): sending again in %g s", exc, interval)


class DevelopmentConfig(BaseConfig):
    DEBUG = True  # tracebacks in 500 responses


class ProductionConfig(BaseConfig):
    pass


class TestingConfig(BaseConfig):
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    # .delay() runs the task right there, in the caller: no broker, no worker. Its result is stored all the same, for
    # GET /tasks/{task_id} to read.
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_STORE_EAGER_RESULT = True


CONFIGS = {"development": DevelopmentConfig, "production": ProductionConfig, "testing": TestingConfig}


def get_settings():
    name = os.environ.get("FASTAPI_CONFIG", "development")
    if name not in CONFIGS:
        raise ValueError(f"FASTAPI_CONFIG={name!r}: use one of {', '.join(CONFIGS)}")
    return CONFIGS[name]()


def create_celery(settings):
    """A Celery app made the default of every thread, the one @shared_task tasks run on, with each CELERY_ setting
    under Celery's own name (CELERY_TASK_ACKS_LATE: task_acks_late): see ch04_factory/README.md, "The Celery app"."""
    celery_app = Celery("worker")
    names = [name for name in dir(settings) if name.startswith("CELERY_")]
    celery_app.conf.update({name.removeprefix("CELERY_").lower(): getattr(settings, name) for name in names})
    celery_app.set_default()
    return celery_app
