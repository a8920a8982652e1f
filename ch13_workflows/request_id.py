"""A request's id, from the API into every task it starts, and on into the tasks those start and their retries.

The API takes the caller's X-Request-ID, or makes one, answers with it, and keeps it while it serves the request
(RequestIdMiddleware). Every task sent meanwhile carries it in its message's headers, never in its arguments; the
worker finds it there (task.request), and hands it on to whatever that task sends.
ch12_logging/README.md, "One id, from the request to the last retry".
"""

import re
import uuid
from contextvars import ContextVar

from celery import current_task
from celery.signals import after_task_publish, before_task_publish, task_received
from celery.utils.log import get_logger
from starlette.datastructures import Headers, MutableHeaders

HEADER = "request_id"  # the task message's header that carries it
VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's id is taken as it is if it looks like this, else replaced
request_id = ContextVar("request_id", default=None)  # the web's: the request being served
logger = get_logger(__name__)


def current_request_id():
    """The id of the task being run, which its message brought; else of the request being served; else None."""
    if current_task and current_task.request.get(HEADER):
        return current_task.request.get(HEADER)
    return request_id.get()


class RequestIdMiddleware:
    """Every request (and WebSocket) gets an id: the caller's X-Request-ID if it is one, else a new one, in its
    answer's X-Request-ID and in every line logged while it is served."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = Headers(scope=scope).get("x-request-id", "")
        # Never reset: uvicorn logs a request's unhandled error once the app has raised it, and each request runs in
        # an asyncio task of its own, whose copy of the context ends with it.
        request_id.set(given if VALID.fullmatch(given) else str(uuid.uuid4()))

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id.get())
            await send(message)

        await self.app(scope, receive, send_with_id)


@before_task_publish.connect
def send_request_id(headers, **kwargs):
    """Whatever sends a task (the API, a task, a retry) while an id is current puts it in the message's headers."""
    if found := current_request_id():
        headers.setdefault(HEADER, found)


@after_task_publish.connect
def log_sent(headers, routing_key, **kwargs):
    """The line that ties a request's id to the id of each task it sent."""
    logger.info("Task %s[%s] sent to %s", headers["task"], headers["id"], routing_key)


@task_received.connect
def log_received(request, **kwargs):
    """Celery's own "received" line, logged again with the message's request id: a worker logs it before any task
    runs, where nothing else would tell the id (logs.py silences Celery's)."""
    task = {"request_id": request.request_dict.get(HEADER), "task_id": request.id, "task_name": request.name}
    logger.info("Task %s[%s] received", request.name, request.id, extra=task)
