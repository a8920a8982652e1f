"""The email service's health, as the latest check found it: asked for (GET /health) or pushed (a WebSocket).

Each check (periodic.check_service) stores what it found under a key and publishes it on the channel of the same
name, as the result backend does with a task's states, so a page learns of each check as it is made; the socket
listens through the web process's one subscriber (status.py).
"""

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from redis.exceptions import ConnectionError as RedisConnectionError

from periodic import HEALTH
from status import reason

health_router = APIRouter()


def service_health(stored):
    """The latest check's JSON (None before the first check), with its age by this server's clock."""
    if stored is None:
        return {"service": "unknown", "checked_at": None, "error": None, "age": None}
    check = json.loads(stored)
    age = datetime.now(UTC) - datetime.fromisoformat(check["checked_at"])
    return {**check, "age": round(age.total_seconds(), 1)}


def health_text(stored):
    """The JSON of a check, made once for all the sockets that watch (Channels.dispatch)."""
    return json.dumps(service_health(stored), separators=(",", ":"), ensure_ascii=False)


@health_router.get("/health")
async def get_health(request: Request):
    return service_health(await request.app.state.redis.get(HEALTH))


@health_router.websocket("/ws/health")
async def ws_health(websocket: WebSocket):
    """The latest check, then every new one, for as long as the client stays; a client that left is noticed at the
    next check, and its watcher dropped then."""
    channels = websocket.app.state.channels
    await websocket.accept()
    if channels is None:
        return await websocket.close(1011, "no Redis result backend to push from")
    try:
        async with channels.watch(HEALTH.encode(), health_text) as watcher:  # as Redis names it in a message: in bytes
            await websocket.send_text(health_text(await websocket.app.state.redis.get(HEALTH)))
            while True:
                await websocket.send_text(await watcher.get())
    except (RedisConnectionError, OSError) as error:
        await websocket.close(1011, reason(f"Redis is unreachable: {error}"))
    except WebSocketDisconnect:
        pass
