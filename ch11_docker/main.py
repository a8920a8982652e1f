"""Chapter 11: the app of the chapters before, unchanged, in containers: docker compose up --build (compose.yaml).

Without Docker, as before: uvicorn third_party:app --port 8010,
celery -A main.celery worker --loglevel=info -Q celery -n celery@%h,
celery -A main.celery worker --loglevel=info -Q images -n images@%h --max-memory-per-child=150000,
celery -A main.celery beat --loglevel=info, alembic upgrade head && uvicorn main:app --reload
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from config import create_celery, get_settings
from errors import BAD_BODY_RESPONSES, add_error_handlers
from health import health_router
from images import images_router, thumbnails
from schemas import MailingList, Numbers, Subscriber
from status import lifespan, status_router
from tasks import divide, import_list, subscribe
from users import users_router

router = APIRouter()


@router.get("/")
async def root():
    return {"message": "Hello World"}


# A plain def runs in a thread pool, so sending the task to Redis does not block the event loop.
@router.post("/divide", responses=BAD_BODY_RESPONSES)
def start_divide(numbers: Numbers):
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@router.post("/subscribe", responses=BAD_BODY_RESPONSES)
def start_subscribe(subscriber: Subscriber):
    task = subscribe.delay(subscriber.email)
    return {"task_id": task.id}


@router.post("/import", responses=BAD_BODY_RESPONSES)
def start_import(mailing_list: MailingList):
    task = import_list.delay(mailing_list.emails)
    return {"task_id": task.id}


@router.get("/form_ws", include_in_schema=False)
def form_ws():
    """Chapter 7's page: a task's every state, and the email service's health."""
    return FileResponse(Path(__file__).with_name("form_ws.html"))


@router.get("/form_avatar", include_in_schema=False)
def form_avatar():
    """Chapter 9's page: an upload, its states, then its thumbnail."""
    return FileResponse(Path(__file__).with_name("form_avatar.html"))


def create_app() -> FastAPI:
    settings = get_settings()
    # A body over 64 KiB gets a 413 before it is read.
    app = FastAPI(
        title="Chapter 11: Docker",
        version="ch11_docker",
        debug=settings.DEBUG,
        max_body_size=65_536,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    app.include_router(status_router)
    app.include_router(health_router)
    app.include_router(users_router)  # and with it the models, for the app as for Alembic
    app.include_router(images_router)
    app.mount("/media/thumbnails", thumbnails())
    add_error_handlers(app)
    return app


app = create_app()
celery = app.state.celery
