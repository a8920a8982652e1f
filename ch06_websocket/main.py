"""Chapter 6: the worker's every state pushed to the browser over a WebSocket, and a list import with progress.

Run: uvicorn third_party:app --port 8010, celery -A main.celery worker --loglevel=info, uvicorn main:app --reload
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from config import create_celery, get_settings
from errors import add_error_handlers
from schemas import MailingList, Numbers, Subscriber
from status import lifespan, status_router
from tasks import divide, import_list, subscribe

router = APIRouter()
BAD_BODY_RESPONSES = {400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}}


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


@router.get("/form", include_in_schema=False)
def form():
    """Chapter 5's page, which polls GET /tasks/{task_id}, to compare."""
    return FileResponse(Path(__file__).with_name("form.html"))


@router.get("/form_ws", include_in_schema=False)
def form_ws():
    """The page that listens: each state is pushed to it over a WebSocket."""
    return FileResponse(Path(__file__).with_name("form_ws.html"))


def create_app() -> FastAPI:
    settings = get_settings()
    # A body over 64 KiB gets a 413 before it is read.
    app = FastAPI(
        title="Chapter 6: WebSockets",
        version="ch06_websocket",
        debug=settings.DEBUG,
        max_body_size=65_536,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    app.include_router(status_router)
    add_error_handlers(app)
    return app


app = create_app()
celery = app.state.celery
