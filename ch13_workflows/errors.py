"""The API's answers to bad input, to a missing Redis and to an unavailable database, for create_app() to install."""

import json

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import exc as db_errors

from database import unavailable

# For the docs of the routes that take a body, in main.py and users.py.
BAD_BODY_RESPONSES = {400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}}

# What Celery's result listener raises when it gave up reconnecting to Redis (from the connection error).
RESULT_LISTENER_GAVE_UP = "Retry limit exceeded while trying to reconnect"


async def invalid_input(request: Request, exc: RequestValidationError):
    """FastAPI's own 422, which would fail to encode a NaN or an Infinity input: here they are shown as text."""
    errors = json.loads(json.dumps(jsonable_encoder(exc.errors())), parse_constant=str)
    return JSONResponse({"detail": errors}, status_code=422)


async def redis_unreachable(request: Request, exc: Exception):
    if isinstance(exc, RuntimeError) and RESULT_LISTENER_GAVE_UP not in str(exc):
        raise exc
    return JSONResponse({"detail": f"Redis is unreachable: {exc.__cause__ or exc}"}, status_code=503)


async def database_unavailable(request: Request, exc: Exception):
    return JSONResponse({"detail": unavailable(exc)}, status_code=503)


def add_error_handlers(app: FastAPI):
    app.add_exception_handler(RequestValidationError, invalid_input)
    # Sending a task: the broker did not answer, or Celery's result listener gave up (a RuntimeError, of that one
    # kind). Reading a result: the result backend did not answer.
    for error in (OperationalError, RuntimeError, RedisConnectionError):
        app.add_exception_handler(error, redis_unreachable)
    for error in (db_errors.OperationalError, db_errors.TimeoutError):
        app.add_exception_handler(error, database_unavailable)
