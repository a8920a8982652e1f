"""One logging configuration for every process: the web app sets it as it starts (with_logging), a Celery worker or
beat through Celery's setup_logging signal, in place of its own, so that no line is dropped or written twice.

Each line carries the id of the request it serves or of the request that started its task, and in a task the
task's name and id; a URL's password and an email address are masked. Text by default, one JSON object a line with
LOG_FORMAT=json; to the terminal, and to a rotated file too with LOG_FILE (config.py). README: "One configuration".
"""

import logging
import logging.config
import re
import socket
from contextlib import asynccontextmanager
from pathlib import Path

from celery import current_task
from celery.signals import setup_logging
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from config import get_settings
from request_id import current_request_id

FORMATS = {
    "text": {"format": "[%(asctime)s: %(levelname)s/%(processName)s] %(context)s%(message)s"},
    "json": {
        "()": JsonFormatter,
        "fmt": ["levelname", "name", "processName", "message", "request_id", "task_id", "task_name"],
        "rename_fields": {"levelname": "level", "name": "logger", "processName": "process"},
        # Not the extras Celery and uvicorn add to their records: Celery's `data` holds a task's arguments
        "reserved_attrs": [*RESERVED_ATTRS, "context", "data", "color_message"],
        "timestamp": "time",
    },
}
PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@\s/]+@")  # redis://:secret@host -> redis://:**@host
# ann@example.com -> a***@example.com; not a worker's name, celery@ this host
EMAIL = re.compile(rf"\b([\w.+-])[\w.+-]*@(?!{re.escape(socket.gethostname())}\b)([\w-]+\.[\w.-]*\w)")


def redact(text):
    return EMAIL.sub(r"\1***@\2", PASSWORD.sub(r"\1:**@", text))


class Context(logging.Filter):
    """request_id, task_id and task_name on every record (None where there is none), and for the text lines
    `context`: the request's id, then the task, unless the message names it already."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        if not hasattr(record, "task_id"):
            in_task = bool(current_task)  # a task runs in this thread now
            record.task_id = current_task.request.id if in_task else None
            record.task_name = current_task.name if in_task else None
        words = [f"request={record.request_id}"] if record.request_id else []
        if record.task_id and record.task_id not in record.getMessage():
            words.append(f"{record.task_name}[{record.task_id}]")
        record.context = f"{' '.join(words)}: " if words else ""
        return True


class Redact(logging.Filter):
    """A line's message and traceback, their secrets masked (README: "No secret in a line")."""

    def filter(self, record):
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            # Formatted once here, masked, in place of the exception: every formatter then shows this text
            record.exc_text, record.exc_info = redact(logging.Formatter().formatException(record.exc_info)), None
        return True


def configure_logging(level=None, logfile=None):
    """Every line at `level` and above (LOG_LEVEL if None) to the terminal, and to `logfile` (LOG_FILE) if there is one,
    in LOG_FORMAT."""
    settings = get_settings()
    if settings.LOG_FORMAT not in FORMATS:
        raise ValueError(f"LOG_FORMAT={settings.LOG_FORMAT!r}: use one of {', '.join(FORMATS)}")
    line = {"formatter": settings.LOG_FORMAT, "filters": ["context", "redact"]}
    handlers = {"terminal": {"class": "logging.StreamHandler", **line}}
    logfile = logfile or settings.LOG_FILE
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        # One file for every process, each a writer: it is locked for each line, and rotated by one of them only
        rotated = {"class": "concurrent_log_handler.ConcurrentRotatingFileHandler", "maxBytes": 10 * 2**20}
        handlers["file"] = {**rotated, "filename": logfile, "backupCount": 5, "encoding": "utf-8", **line}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": Context}, "redact": {"()": Redact}},
            "formatters": FORMATS,
            "handlers": handlers,
            "root": {"level": level or settings.LOG_LEVEL, "handlers": list(handlers)},
            "loggers": {
                # uvicorn's own handlers are dropped: its lines reach the root's, once
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": True},
                # its "received" line is logged again, with the request's id, by request_id.log_received
                "celery.worker.strategy": {"level": "WARNING"},
            },
        }
    )


@setup_logging.connect
def celery_logging(loglevel, logfile, **kwargs):
    """A worker or beat hands over its --loglevel and --logfile, and then configures nothing itself: no handler of
    its own on the root logger or the task loggers, and print() left to go to the terminal."""
    try:
        configure_logging(loglevel, logfile)
    except ValueError as error:
        # Celery catches what a receiver raises, logs it where no handler is yet, and goes on: the process would run
        # and log nothing. SystemExit is not caught: the process stops, the message on its terminal.
        raise SystemExit(str(error)) from error


def with_logging(lifespan):
    """The app's lifespan, logging configured first: in the process that serves the app, not in every process that
    imports it (Flower, which logs its own way, a shell, the tests)."""

    @asynccontextmanager
    async def configured(app):
        configure_logging()
        async with lifespan(app) as state:
            yield state

    return configured
