"""The references of bench/push.py: servers that push the same states to the same clients as chapter 6, and do nothing
else, to show what Python itself costs.

Usage: python push_bare.py PORT [PROCESSES] (a bare `websockets` server, each state sent with websockets.broadcast(),
in 1 process or more, which share the port), or
uvicorn push_bare:app (a bare Starlette endpoint, each state sent with `await websocket.send_text` to one socket after
the other); Redis at CELERY_RESULT_BACKEND. Both read the channel the Celery result backend publishes each stored
state on, as chapter 6 does, from one pub/sub connection (a pattern subscription for every task, made at start-up);
a socket at /ws/task_status/{task_id} gets {"state": "PENDING"} once it is in place (as chapter 6's first message),
then each state of its task as chapter 6's JSON, without any of chapter 6's guarantees (bounded queues, closes,
recovery from Redis going). No per-message compression: for messages of a few dozen bytes it costs more than it saves.
"""

import asyncio
import json
import multiprocessing
import os
import sys
from contextlib import asynccontextmanager

import websockets
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

PREFIX = "celery-task-meta-"  # the keys of the Celery result backend, and the channels it publishes on
watchers = {}  # task id -> the sockets watching it


def status(task_id, data):
    """A stored state as chapter 6's JSON (its status_json)."""
    meta = json.loads(data)
    state, result = meta["status"], meta["result"]
    return json.dumps(
        {
            "task_id": task_id,
            "state": state,
            "retries": meta.get("retries") or 0,
            "result": result if state in ("SUCCESS", "PROGRESS") else None,
            "error": str(result) if state in ("RETRY", "FAILURE") else None,
        },
        separators=(",", ":"),
    )


async def subscribe(send):
    """Every state the result backend publishes, encoded once and handed to `await send(sockets, text)` for the
    sockets of its task."""
    redis = Redis.from_url(os.environ["CELERY_RESULT_BACKEND"])
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{PREFIX}*")
    async for message in pubsub.listen():
        if message["type"] == "pmessage":
            task_id = message["channel"].decode().removeprefix(PREFIX)
            if watchers.get(task_id):
                await send(watchers[task_id], status(task_id, message["data"]))


@asynccontextmanager
async def watching(task_id, socket):
    """socket among its task's watchers, for the block."""
    sockets = watchers.setdefault(task_id, set())
    sockets.add(socket)
    try:
        yield
    finally:
        sockets.discard(socket)
        if not sockets:
            del watchers[task_id]


# --- the bare websockets server: python push_bare.py PORT [PROCESSES] ------------------------------------------------


async def broadcast(sockets, text):
    websockets.broadcast(sockets, text)


async def handler(socket):
    task_id = socket.request.path.rsplit("/", 1)[1]
    async with watching(task_id, socket):
        await socket.send('{"state":"PENDING"}')
        await socket.wait_closed()


async def serve(port):
    # the backlog uvicorn has by default: sockets opened together wait in it, not refused
    # reuse_port: the processes listen on the same port, and the kernel spreads the sockets over them
    async with websockets.serve(handler, "127.0.0.1", port, compression=None, backlog=2048, reuse_port=True):
        await subscribe(broadcast)


def run(port):
    asyncio.run(serve(port))


def run_in(port, processes):
    """run(port) in `processes` processes, started as uvicorn --workers starts its workers (multiprocessing)."""
    workers = [multiprocessing.Process(target=run, args=(port,)) for _ in range(processes)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()


# --- the bare Starlette endpoint: uvicorn push_bare:app ------------------------------------------------------------


async def send_each(sockets, text):
    for socket in list(sockets):
        try:
            await socket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # gone meanwhile


async def ws_task_status(socket):
    await socket.accept()
    async with watching(socket.path_params["task_id"], socket):
        await socket.send_text('{"state":"PENDING"}')
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass


async def root(request):
    return PlainTextResponse("push_bare")


@asynccontextmanager
async def lifespan(app):
    subscriber = asyncio.create_task(subscribe(send_each))
    yield
    subscriber.cancel()


app = Starlette(
    routes=[Route("/", root), WebSocketRoute("/ws/task_status/{task_id}", ws_task_status)], lifespan=lifespan
)


if __name__ == "__main__":
    run_in(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
