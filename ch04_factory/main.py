"""Chapter 4: an application factory. create_app() builds the FastAPI app and configures Celery for it;
FASTAPI_CONFIG picks development (the default), production, or testing (tasks run eagerly: no Redis).

Run: celery -A main.celery worker --loglevel=info   (and uvicorn main:app --reload)
"""

from celery import current_app as current_celery_app
from celery.result import AsyncResult
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, FiniteFloat

from config import get_settings
from errors import add_error_handlers
from tasks import divide


def create_celery(settings):
    celery_app = current_celery_app._get_current_object()  # the app that @shared_task tasks run on
    celery_app.config_from_object(settings, namespace="CELERY")
    celery_app.conf.deprecated_settings.clear()  # no key is a Celery 3 name under a namespace: see README
    return celery_app


router = APIRouter()


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


@router.get("/")
async def root():
    return {"message": "Hello World"}


@router.post("/divide", responses={400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}})
def start_divide(numbers: Numbers):  # a plain def runs in a thread pool: sending to Redis won't block the event loop
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@router.get("/tasks/{task_id}")
def task_status(task_id: str, request: Request):
    task = AsyncResult(task_id, app=request.app.celery_app)
    state = task.state  # read once: the task may finish between two reads
    return {
        "task_id": task_id,
        "state": state,
        "result": task.result if state == "SUCCESS" else None,
        "error": f"{type(task.result).__name__}: {task.result}" if state == "FAILURE" else None,
    }


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
