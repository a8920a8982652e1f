"""An export of the users as one CSV file, made by many tasks: a chord, that is a group of chunk tasks of a few hundred
users each, then a callback, join, that makes their files one (README: "An export in chunks").

The export's id is the id of its join. Its progress is stored as that id's PROGRESS state, so chapter 6's WebSocket
pushes it as it pushes any state; GET /exports/{id} adds the chunks done and the file's address, and DELETE cancels
(README: "Cancel"). The tasks' names start with `exports.`: config.py's CELERY_TASK_ROUTES sends them to a queue,
and a worker, of their own.
"""

import csv
import os
import shutil
import uuid
from time import sleep

from celery import chord, shared_task
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore
from celery.states import READY_STATES
from fastapi import APIRouter, HTTPException, Request
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from sqlalchemy import func, select

from config import get_settings
from database import Session
from errors import BAD_BODY_RESPONSES
from models import User
from retrying import Retrying
from schemas import ExportOptions, NewUser
from users import UNAVAILABLE, as_utc

CHUNKS, EXPORTS = get_settings().MEDIA_ROOT / "chunks", get_settings().MEDIA_ROOT / "exports"
DELAY = float(os.environ.get("EXPORT_CHUNK_DELAY", 0.5))  # a chunk takes this long at least, so you can watch it
COLUMNS = ["id", "email", "name", "created_at", "subscribed_at"]

exports_router = APIRouter()


class BadRow(ValueError):
    """A user the API would refuse (stored around it, by hand or by a bulk load): no file is made with it."""


def keys(export_id):
    """The export's keys in the Redis of the results: a hash (total, users, and `ended` once it has), the set of the
    chunks written, and the lock its state is written under."""
    return f"export:{export_id}", f"export:{export_id}:done", f"export:{export_id}:lock"


def redis_of(request):
    backend = request.app.state.celery.backend
    # The testing settings keep results in memory (a cache backend, whose `client` is no Redis): nowhere to hold an
    # export's progress
    if not isinstance(backend, RedisBackend):
        raise HTTPException(503, "exports need the Redis result backend")
    return backend.client


@exports_router.post("/exports", status_code=202, responses={**BAD_BODY_RESPONSES, **UNAVAILABLE})
def start_export(request: Request, options: ExportOptions | None = None):
    """Cut the users into chunks by id, in the database, then send the chord: the chunks, then join."""
    size = (options or ExportOptions()).chunk_size
    with Session() as session:
        # The first id of each chunk: ids, not OFFSET, so a user added meanwhile moves no other to another chunk
        numbered = select(User.id, func.row_number().over(order_by=User.id).label("n")).subquery()
        firsts = session.scalars(select(numbered.c.id).where((numbered.c.n - 1) % size == 0).order_by(numbered.c.id))
        firsts = list(firsts)
        users, last = session.execute(select(func.count(), func.max(User.id))).one()
    lasts = [after - 1 for after in firsts[1:]] + ([last] if firsts else [])
    bounds = list(zip(firsts, lasts, strict=True))
    export_id, redis = str(uuid.uuid4()), redis_of(request)
    record, _, _ = keys(export_id)
    expires = int(request.app.state.celery.conf.result_expires.total_seconds())  # as long as the results: a day
    redis.pipeline().hset(record, mapping={"total": len(bounds), "users": users}).expire(record, expires).execute()
    # Each chunk's id says whose it is, and which: the export's id, then its number (in the logs, in Flower)
    chunks = [
        write_chunk.s(export_id, index, first, last).set(task_id=f"{export_id}-{index:05}")
        for index, (first, last) in enumerate(bounds)
    ]
    chord(chunks, join.s(export_id).set(task_id=export_id).on_error(discard.s())).apply_async()
    return {"task_id": export_id}


def export_json(request, export_id):
    record, done, _ = keys(export_id)
    redis = redis_of(request)
    total, users = redis.hmget(record, "total", "users")
    if total is None:
        raise HTTPException(404, f"no export {export_id}")
    meta = request.app.state.celery.backend.get_task_meta(export_id)
    state, result = meta["status"], meta["result"]
    return {
        "task_id": export_id,
        "state": state,
        "done": redis.scard(done),
        "total": int(total),
        "users": int(users),
        "url": result["url"] if state == "SUCCESS" else None,
        "error": f"{type(result).__name__}: {result}" if state in ("FAILURE", "REVOKED") else None,
    }


@exports_router.get("/exports/{task_id}", responses={404: {"description": "No such export"}, **UNAVAILABLE})
def get_export(task_id: str, request: Request):
    return export_json(request, task_id)


@exports_router.delete(
    "/exports/{task_id}",
    responses={404: {"description": "No such export"}, 409: {"description": "It has ended already"}, **UNAVAILABLE},
)
def cancel_export(task_id: str, request: Request):
    """Mark it ended, REVOKED, under its lock: a chunk that starts later does nothing, one that runs drops what it
    wrote, join never makes the file (README: "Cancel")."""
    celery, redis = request.app.state.celery, redis_of(request)
    record, _, lock = keys(task_id)
    if not redis.exists(record):
        raise HTTPException(404, f"no export {task_id}")
    with redis.lock(lock, timeout=10, blocking_timeout=30):
        state = ended(redis, task_id) or celery.backend.get_task_meta(task_id)["status"]
        if state in READY_STATES:
            raise HTTPException(409, f"export {task_id} has ended already: {state}")
        redis.hset(record, "ended", "REVOKED")
        celery.backend.mark_as_revoked(task_id, "revoked")
    # join, should it be queued already: the workers running now drop it unrun. Not terminate=True, which kills the
    # process running a task, whatever it is doing by then: the chunks are short, and stop by themselves.
    celery.control.revoke(task_id)
    shutil.rmtree(CHUNKS / task_id, ignore_errors=True)
    return export_json(request, task_id)


def ended(redis, export_id):
    """How the export ended, as the state it ended in (SUCCESS, FAILURE, REVOKED); "" while it runs."""
    return (redis.hget(keys(export_id)[0], "ended") or b"").decode()


def row(user):
    """A user as a CSV row, once the API's own rules accept it."""
    try:
        NewUser(email=user.email, name=user.name)
    except ValidationError as exc:
        raise BadRow(f"user {user.id}: {exc.errors()[0]['msg']}") from None
    subscribed = as_utc(user.subscribed_at)
    return [user.id, user.email, user.name, as_utc(user.created_at).isoformat(), subscribed and subscribed.isoformat()]


def revoked(task, export_id):
    """What a task does on finding its export cancelled: what was written of it goes; the export's state is REVOKED
    again (over join's STARTED), and so is the task's own; and it ends as Ignore, which reports nothing to the chord
    (a REVOKED reported there would end the export as a FAILURE: README, "Cancel")."""
    shutil.rmtree(CHUNKS / export_id, ignore_errors=True)
    for task_id in {export_id, task.request.id}:
        task.backend.mark_as_revoked(task_id, "revoked")
    return Ignore()


# The database away: waited for (retrying.py). A bad row: FAILURE, and with it the export's, logged without a traceback.
@shared_task(bind=True, base=Retrying, throws=(BadRow,))
def write_chunk(self, export_id, index, first, last):
    """The users whose id is from first to last, as CSV rows, in a file of the chunk's own: the same file, however
    often this runs. Then the export's progress, stored under its lock, so that it never goes back."""
    redis, (record, done, lock) = self.backend.client, keys(export_id)
    if state := ended(redis, export_id):  # cancelled before this chunk started: it does nothing
        raise revoked(self, export_id) if state == "REVOKED" else Ignore()
    with Session() as session:
        users = session.scalars(select(User).where(User.id.between(first, last)).order_by(User.id)).all()
    sleep(DELAY)  # stands in for slow work: figures to compute for each user, a call to make for each...
    folder = CHUNKS / export_id
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{index:05}.{uuid.uuid4().hex}.part"  # two runs at once never write into one file
    with part.open("w", newline="") as file:
        csv.writer(file).writerows(row(user) for user in users)
    os.replace(part, folder / f"{index:05}.csv")
    with redis.lock(lock, timeout=10, blocking_timeout=30):
        # Cancelled while this chunk ran: what it wrote goes. Or a second run, after the export ended: nothing to add.
        if state := ended(redis, export_id):
            raise revoked(self, export_id) if state == "REVOKED" else Ignore()
        total = int(redis.pipeline().sadd(done, index).hget(record, "total").execute()[1])
        self.backend.store_result(export_id, {"done": redis.scard(done), "total": total}, "PROGRESS")
    return {"index": index, "users": len(users)}


@shared_task(bind=True)
def join(self, chunks, export_id):
    """The chord's callback, once every chunk is written: the header, then the chunks in order, into one file that
    appears whole or not at all. chunks: what each write_chunk returned, in order."""
    redis, (record, _, lock) = self.backend.client, keys(export_id)
    name, folder = f"{export_id}.csv", CHUNKS / export_id
    result = {"url": f"/media/exports/{name}", "users": sum(chunk["users"] for chunk in chunks)}
    if ended(redis, export_id) == "REVOKED":
        raise revoked(self, export_id)
    if ended(redis, export_id) == "SUCCESS" and (EXPORTS / name).exists():  # a second run, after a crash
        return result
    folder.mkdir(parents=True, exist_ok=True)  # with no users, there is no chunk: a file of headers only
    part = folder / f"{uuid.uuid4().hex}.part"  # among the chunks, never served, until it is whole
    with part.open("w", newline="") as file:
        csv.writer(file).writerow(COLUMNS)
        for chunk in chunks:
            with (folder / f"{chunk['index']:05}.csv").open(newline="") as rows:
                shutil.copyfileobj(rows, file)
    with redis.lock(lock, timeout=10, blocking_timeout=30):
        if ended(redis, export_id) == "REVOKED":  # cancelled while the chunks were joined
            raise revoked(self, export_id)
        redis.hset(record, "ended", "SUCCESS")
    EXPORTS.mkdir(parents=True, exist_ok=True)
    os.replace(part, EXPORTS / name)
    shutil.rmtree(folder, ignore_errors=True)
    return result


@shared_task(bind=True)
def discard(self, export_id):
    """The export's error callback (link_error), sent once when it fails, by a chunk or by join: nothing of it stays."""
    redis, (record, _, lock) = self.backend.client, keys(export_id)
    with redis.lock(lock, timeout=10, blocking_timeout=30):
        redis.hsetnx(record, "ended", "FAILURE")
    shutil.rmtree(CHUNKS / export_id, ignore_errors=True)


def exports_folder():
    """What create_app serves at /media/exports: the finished files, never the chunks."""
    EXPORTS.mkdir(parents=True, exist_ok=True)
    return StaticFiles(directory=EXPORTS)
