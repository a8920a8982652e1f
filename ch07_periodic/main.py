"""Chapter 7: tasks on a schedule (Celery beat): a check of the email service, and a sweep of failed subscriptions.

Run: uvicorn third_party:app --port 8010, celery -A main.celery worker --loglevel=info,
celery -A main.celery beat --loglevel=info, uvicorn main:app --reload
"""

from pathlib import Path

from celery import current_app as current_celery_app
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, FiniteFloat

from config import get_settings
from errors import add_error_handlers
from health import health_router
from status import lifespan, status_router
from tasks import divide, import_list, subscribe


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


class MailingList(BaseModel):
    emails: list[EmailStr] = Field(min_length=1, max_length=10)  # a call of 5 s each: under a minute in all


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


@router.post("/import", responses=BAD_BODY)
def start_import(mailing_list: MailingList):
    task = import_list.delay(mailing_list.emails)
    return {"task_id": task.id}


@router.get("/form", include_in_schema=False)
def form():  # chapter 5's page: it polls
    return FileResponse(Path(__file__).with_name("form.html"))


@router.get("/form_ws", include_in_schema=False)
def form_ws():  # this chapter's page: it listens
    return FileResponse(Path(__file__).with_name("form_ws.html"))


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(debug=settings.DEBUG, max_body_size=65_536, lifespan=lifespan)  # a bigger body: 413, unread
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    app.include_router(status_router)
    app.include_router(health_router)
    add_error_handlers(app)
    return app


app = create_app()
celery = app.state.celery
