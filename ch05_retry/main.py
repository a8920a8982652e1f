"""Chapter 5: a slow, flaky third-party call moved into a task that retries, and a page that polls its state.

Run: uvicorn third_party:app --port 8010, celery -A main.celery worker --loglevel=info, uvicorn main:app --reload
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse

from config import create_celery, get_settings
from errors import add_error_handlers
from schemas import Numbers, Subscriber
from tasks import divide, subscribe

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


# One read of the result backend, so state, result and retries agree. A RETRY is stored before its retry runs,
# with the count of the retries before it: that one is counted here.
@router.get("/tasks/{task_id}")
def get_status(task_id: str, request: Request):
    meta = request.app.state.celery.backend.get_task_meta(task_id)
    state, result, retries = meta["status"], meta["result"], meta.get("retries") or 0
    return {
        "task_id": task_id,
        "state": state,
        "retries": retries + 1 if state == "RETRY" else retries,
        "result": result if state == "SUCCESS" else None,
        "error": f"{type(result).__name__}: {result}" if state in ("RETRY", "FAILURE") else None,
    }


@router.get("/form", include_in_schema=False)
def form():
    return FileResponse(Path(__file__).with_name("form.html"))


def create_app() -> FastAPI:
    settings = get_settings()
    # A body over 64 KiB gets a 413 before it is read.
    app = FastAPI(title="Chapter 5: retries", version="ch05_retry", debug=settings.DEBUG, max_body_size=65_536)
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    add_error_handlers(app)
    return app


app = create_app()
celery = app.state.celery
