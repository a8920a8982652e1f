"""The email service's health, as the latest check found it: asked for (GET /health) or pushed (a WebSocket).

Each check (periodic.check_service) stores what it found under a key and publishes it on the channel of the same
name, as the result backend does with a task's states, so a page learns of each check as it is made.
"""

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from redis.exceptions import ConnectionError as RedisConnectionError

from periodic import HEALTH

health_router = APIRouter()


def service_health(stored):  # stored: the latest check's JSON, or None before the first check
    if stored is None:
        return {"service": "unknown", "checked_at": None, "age": None, "error": None}
    check = json.loads(stored)
    age = datetime.now(UTC) - datetime.fromisoformat(check["checked_at"])
    return {**check, "age": round(age.total_seconds(), 1)}  # seconds since the check, by this server's clock


@health_router.get("/health")
async def get_health(request: Request):
    return service_health(await request.app.state.redis.get(HEALTH))


@health_router.websocket("/ws/health")
async def ws_health(websocket: WebSocket):  # open for as long as the client stays: it gets every check
    await websocket.accept()
    redis = websocket.app.state.redis
    try:
        async with redis.pubsub() as pubsub:
            await pubsub.subscribe(HEALTH)  # before reading the latest: no check is missed in between
            await websocket.send_json(service_health(await redis.get(HEALTH)))
            async for message in pubsub.listen():
                if message["type"] == "message":
                    await websocket.send_json(service_health(message["data"]))
    except RedisConnectionError as exc:
        await websocket.close(1011, f"Redis is unreachable: {exc}"[:123])
    except WebSocketDisconnect:  # a client that left is noticed at the next check, and unsubscribed then
        pass
