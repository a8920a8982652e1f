"""Chapter 1: FastAPI, with a Celery worker running inside the web process.

Run: uvicorn main:app --reload   (no Redis, no second terminal)
"""

from contextlib import asynccontextmanager

from celery.contrib.testing.worker import start_worker
from fastapi import FastAPI

from tasks import add, celery


@asynccontextmanager
async def lifespan(app: FastAPI):
    with start_worker(celery, perform_ping_check=False, loglevel="INFO"):
        yield


app = FastAPI(title="Chapter 1: Celery inside FastAPI", version="ch01_hello", lifespan=lifespan)


@app.get("/")
async def root():
    return {"message": "Hello World"}


@app.get("/add")
def add_numbers(x: int = 2, y: int = 2):
    result = add.delay(x, y)
    return {f"{x}+{y}": result.get(timeout=10, interval=0.01)}
