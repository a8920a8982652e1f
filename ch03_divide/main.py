"""Chapter 3: the guide's divide task, run by a real worker over Redis, and an HTTP API for it.

Run: celery -A main.celery worker --loglevel=info   (and uvicorn main:app --reload)
"""

import json

from celery.result import AsyncResult
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, FiniteFloat
from redis.exceptions import ConnectionError as RedisConnectionError

from tasks import celery, divide

# What Celery's result listener raises when it gave up reconnecting to Redis (from the connection error).
RESULT_LISTENER_GAVE_UP = "Retry limit exceeded while trying to reconnect"

# A body over 64 KiB gets a 413 before it is read.
app = FastAPI(title="Chapter 3: divide, run by a worker", version="ch03_divide", max_body_size=65_536)


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


@app.get("/")
async def root():
    return {"message": "Hello World"}


# A plain def runs in a thread pool, so sending the task to Redis does not block the event loop.
@app.post("/divide", responses={400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}})
def start_divide(numbers: Numbers):
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@app.get("/tasks/{task_id}")
def get_status(task_id: str):
    task = AsyncResult(task_id, app=celery)
    state = task.state  # read once: the task may finish between two reads
    return {
        "task_id": task_id,
        "state": state,
        "result": task.result if state == "SUCCESS" else None,
        "error": f"{type(task.result).__name__}: {task.result}" if state == "FAILURE" else None,
    }


# FastAPI's own 422, which would fail to encode a NaN or an Infinity input: here they are shown as text.
@app.exception_handler(RequestValidationError)
async def invalid_input(request: Request, exc: RequestValidationError):
    errors = json.loads(json.dumps(jsonable_encoder(exc.errors())), parse_constant=str)
    return JSONResponse({"detail": errors}, status_code=422)


# Sending a task: the broker did not answer, or Celery's result listener gave up (a RuntimeError, of that one kind).
# Reading a result: the result backend did not answer.
@app.exception_handler(OperationalError)
@app.exception_handler(RuntimeError)
@app.exception_handler(RedisConnectionError)
async def redis_unreachable(request: Request, exc: Exception):
    if isinstance(exc, RuntimeError) and RESULT_LISTENER_GAVE_UP not in str(exc):
        raise exc
    return JSONResponse({"detail": f"Redis is unreachable: {exc.__cause__ or exc}"}, status_code=503)
