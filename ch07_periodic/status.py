"""A task's state, asked for (GET /tasks/{task_id}) or pushed (a WebSocket), as the same JSON.

The Redis result backend publishes each state it stores on a channel named after the result's key, so the
WebSocket subscribes to that channel: the worker needs no code of its own to push.
"""

import asyncio
from contextlib import asynccontextmanager

from celery.states import READY_STATES
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

status_router = APIRouter()


@asynccontextmanager
async def lifespan(app: FastAPI):  # one client for the app; each open WebSocket takes a connection of its pool
    url = app.state.celery.conf.result_backend
    app.state.redis = Redis.from_url(url, max_connections=10_000) if url.startswith("redis") else None  # testing: none
    yield
    if app.state.redis:
        await app.state.redis.aclose()


def task_status(task_id, meta):  # meta: what the result backend stored
    state, result = meta["status"], meta["result"]
    return {
        "task_id": task_id,
        "state": state,
        "retries": (meta.get("retries") or 0) + (state == "RETRY"),  # RETRY is stored before the retry runs
        "result": result if state in ("SUCCESS", "PROGRESS") else None,  # PROGRESS: {"done": 2, "total": 5}
        "error": f"{type(result).__name__}: {result}" if state in ("RETRY", "FAILURE") else None,
    }


@status_router.get("/tasks/{task_id}")
def get_status(task_id: str, request: Request):
    return task_status(task_id, request.app.state.celery.backend.get_task_meta(task_id))  # one read


async def push_states(websocket: WebSocket, pubsub, task_id):
    redis, backend = websocket.app.state.redis, websocket.app.state.celery.backend
    key = backend.get_key_for_task(task_id)  # the stored result's key, and the channel of its changes
    await pubsub.subscribe(key)  # before reading the state: whatever is stored from now on reaches us
    stored = await redis.get(key)
    status = task_status(task_id, backend.decode_result(stored) if stored else {"status": "PENDING", "result": None})
    await websocket.send_json(status)
    while status["state"] not in READY_STATES:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        new = message and task_status(task_id, backend.decode_result(message["data"]))
        if new and new != status:  # not the state just sent again (stored between subscribing and reading)
            status = new
            await websocket.send_json(status)


@status_router.websocket("/ws/task_status/{task_id}")
async def ws_task_status(websocket: WebSocket, task_id: str):
    await websocket.accept()
    if websocket.app.state.redis is None:
        return await websocket.close(1011, "no Redis result backend to push from")
    async with websocket.app.state.redis.pubsub() as pubsub:  # on the way out: unsubscribed, connection closed
        pushing = asyncio.create_task(push_states(websocket, pubsub, task_id))
        leaving = asyncio.create_task(websocket.receive())  # a client says nothing: this ends when it goes
        done, pending = await asyncio.wait({pushing, leaving}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # ended before the subscription is
    try:
        if pushing in done:
            if isinstance(pushing.exception(), RedisConnectionError):
                return await websocket.close(1011, f"Redis is unreachable: {pushing.exception()}"[:123])
            pushing.result()  # any other error is raised: the server logs it and closes the socket with 1011
            await websocket.close()  # after SUCCESS or FAILURE
    except WebSocketDisconnect:  # the client went at the same moment: there is nothing left to close
        pass
