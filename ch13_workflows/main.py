"""Chapter 13: an export made by many tasks (a chord), pushed and cancelled; retries in one place; one rate for all.

Run: uvicorn third_party:app --port 8010, celery -A main.celery worker --loglevel=info -Q celery -n celery@%h,
celery -A main.celery worker --loglevel=info -Q images -n images@%h --max-memory-per-child=150000,
celery -A main.celery worker --loglevel=info -Q exports -n exports@%h,
celery -A main.celery beat --loglevel=info, alembic upgrade head && uvicorn main:app --reload; or, in containers,
docker compose up --build (compose.yaml)
"""

from fastapi import APIRouter, FastAPI

from config import create_celery, get_settings
from errors import BAD_BODY_RESPONSES, add_error_handlers
from exports import exports_folder, exports_router
from health import health_router
from images import images_router, thumbnails
from logs import with_logging
from pages import pages_router
from request_id import RequestIdMiddleware
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


def create_app() -> FastAPI:
    settings = get_settings()
    # A body over 64 KiB gets a 413 before it is read.
    app = FastAPI(
        title="Chapter 13: workflows",
        version="ch13_workflows",
        debug=settings.DEBUG,
        max_body_size=65_536,
        lifespan=with_logging(lifespan),  # the web's logging, configured as it starts
    )
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    app.include_router(status_router)
    app.include_router(health_router)
    app.include_router(users_router)  # and with it the models, for the app as for Alembic
    app.include_router(images_router)
    app.include_router(exports_router)
    app.include_router(pages_router)
    app.mount("/media/thumbnails", thumbnails())
    app.mount("/media/exports", exports_folder())  # the finished files; the chunks stay unserved
    add_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
celery = app.state.celery
