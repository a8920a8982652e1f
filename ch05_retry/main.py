"""Chapter 5: a slow, flaky third-party call moved into a task that retries, and a page that polls its state.

Run: uvicorn third_party:app --port 8010, celery -A main.celery worker --loglevel=info, uvicorn main:app --reload
"""

from pathlib import Path

from celery import current_app as current_celery_app
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, EmailStr, FiniteFloat

from config import get_settings
from errors import add_error_handlers
from tasks import divide, subscribe


def create_celery(settings):
    celery_app = current_celery_app._get_current_object()  # the app that @shared_task tasks run on
    celery_app.config_from_object(settings, namespace="CELERY")
    celery_app.conf.deprecated_settings.clear()  # no key is a Celery 3 name under a namespace: see README
    return celery_app


router = APIRouter()
BAD_BODY = {400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}}


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


class Subscriber(BaseModel):
    email: EmailStr


@router.get("/")
async def root():
    return {"message": "Hello World"}


@router.post("/divide", responses=BAD_BODY)
def start_divide(numbers: Numbers):  # a plain def runs in a thread pool: sending to Redis won't block the event loop
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@router.post("/subscribe", responses=BAD_BODY)
def start_subscribe(subscriber: Subscriber):  # answers at once; the task calls the slow service
    task = subscribe.delay(subscriber.email)
    return {"task_id": task.id}


@router.get("/tasks/{task_id}")
def task_status(task_id: str, request: Request):
    meta = request.app.celery_app.backend.get_task_meta(task_id)  # one read: state, result and retries agree
    state, result = meta["status"], meta["result"]
    return {
        "task_id": task_id,
        "state": state,
        "retries": (meta.get("retries") or 0) + (state == "RETRY"),  # RETRY is stored before the retry runs
        "result": result if state == "SUCCESS" else None,
        "error": f"{type(result).__name__}: {result}" if state in ("RETRY", "FAILURE") else None,
    }


@router.get("/form", include_in_schema=False)
def form():
    return FileResponse(Path(__file__).with_name("form.html"))


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(debug=settings.DEBUG, max_body_size=65_536)  # a bigger body: 413 before it is read
    app.settings = settings
    app.celery_app = create_celery(settings)
    app.include_router(router)
    add_error_handlers(app)
    return app


app = create_app()
celery = app.celery_app
