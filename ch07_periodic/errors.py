"""The API's answers to bad input and to a missing Redis, for create_app() to install."""

import json

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError


async def invalid_input(request: Request, exc: RequestValidationError):  # FastAPI's 422, even for a NaN input
    errors = json.loads(json.dumps(jsonable_encoder(exc.errors())), parse_constant=str)  # NaN, Infinity: as text
    return JSONResponse({"detail": errors}, status_code=422)


async def redis_unreachable(request: Request, exc: Exception):
    if isinstance(exc, RuntimeError) and not isinstance(exc.__cause__, RedisConnectionError):
        raise exc  # a RuntimeError of another kind
    return JSONResponse({"detail": f"Redis is unreachable: {exc.__cause__ or exc}"}, status_code=503)


def add_error_handlers(app: FastAPI):
    app.add_exception_handler(RequestValidationError, invalid_input)
    # sending a task: the broker did not answer, or Celery's result listener gave up reconnecting;
    # reading a result: the result backend did not answer
    for error in (OperationalError, RuntimeError, RedisConnectionError):
        app.add_exception_handler(error, redis_unreachable)
