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

app = FastAPI(max_body_size=65_536)  # a bigger body gets 413 before it is read


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


@app.get("/")
async def root():
    return {"message": "Hello World"}


@app.post("/divide", responses={400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}})
def start_divide(numbers: Numbers):  # a plain def runs in a thread pool: sending to Redis won't block the event loop
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@app.get("/tasks/{task_id}")
def task_status(task_id: str):
    task = AsyncResult(task_id, app=celery)
    state = task.state  # read once: the task may finish between two reads
    return {
        "task_id": task_id,
        "state": state,
        "result": task.result if state == "SUCCESS" else None,
        "error": f"{type(task.result).__name__}: {task.result}" if state == "FAILURE" else None,
    }


@app.exception_handler(RequestValidationError)
async def invalid_input(request: Request, exc: RequestValidationError):  # FastAPI's 422, even for a NaN input
    errors = json.loads(json.dumps(jsonable_encoder(exc.errors())), parse_constant=str)  # NaN, Infinity: as text
    return JSONResponse({"detail": errors}, status_code=422)


@app.exception_handler(OperationalError)  # sending a task: the broker did not answer
@app.exception_handler(RedisConnectionError)  # reading a result: the result backend did not answer
@app.exception_handler(RuntimeError)  # sending a task: Celery's result listener gave up reconnecting
async def redis_unreachable(request: Request, exc: Exception):
    if isinstance(exc, RuntimeError) and not isinstance(exc.__cause__, RedisConnectionError):
        raise exc
    return JSONResponse({"detail": f"Redis is unreachable: {exc.__cause__ or exc}"}, status_code=503)
