"""Chapter 4: an application factory. create_app() builds the FastAPI app and configures Celery for it;
FASTAPI_CONFIG picks development (the default), production, or testing (tasks run eagerly: no Redis).

Run: celery -A main.celery worker --loglevel=info   (and uvicorn main:app --reload)
"""

from celery.result import AsyncResult
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, FiniteFloat

from config import create_celery, get_settings
from errors import add_error_handlers
from tasks import divide

router = APIRouter()


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


@router.get("/")
async def root():
    return {"message": "Hello World"}


# A plain def runs in a thread pool, so sending the task to Redis does not block the event loop.
@router.post("/divide", responses={400: {"description": "Not UTF-8 JSON"}, 413: {"description": "Over 64 KiB"}})
def start_divide(numbers: Numbers):
    task = divide.delay(numbers.x, numbers.y)
    return {"task_id": task.id}


@router.get("/tasks/{task_id}")
def get_status(task_id: str, request: Request):
    task = AsyncResult(task_id, app=request.app.state.celery)
    state = task.state  # read once: the task may finish between two reads
    return {
        "task_id": task_id,
        "state": state,
        "result": task.result if state == "SUCCESS" else None,
        "error": f"{type(task.result).__name__}: {task.result}" if state == "FAILURE" else None,
    }


def create_app() -> FastAPI:
    settings = get_settings()
    # A body over 64 KiB gets a 413 before it is read.
    app = FastAPI(
        title="Chapter 4: an application factory", version="ch04_factory", debug=settings.DEBUG, max_body_size=65_536
    )
    app.state.settings = settings
    app.state.celery = create_celery(settings)
    app.include_router(router)
    add_error_handlers(app)
    return app


app = create_app()
celery = app.state.celery
