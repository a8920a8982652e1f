"""A task's state, asked for (GET /tasks/{task_id}) or pushed (a WebSocket), as the same JSON.

The Redis result backend publishes each state it stores on a channel named after the result's key, so the
WebSocket listens on that channel: the worker needs no code of its own to push. One pub/sub connection serves
every socket of the web process (README: "One Redis connection for every socket").
"""

import asyncio
import gc
import json
import resource
from contextlib import asynccontextmanager, suppress
from functools import partial

from celery.states import READY_STATES
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from channels import QUEUE_SIZE, Channels

status_router = APIRouter()

# RFC 6455 allows a close reason of at most 123 bytes of UTF-8
MAX_REASON_BYTES = 123
# A client further behind than QUEUE_SIZE states is closed with this code
TOO_FAR_BEHIND = 4000
# RFC 6455's "Try Again Later": the process holds as many sockets as it can (MAX_SOCKETS)
TRY_AGAIN_LATER = 1013
# Each socket holds a file descriptor; RESERVED_FDS are kept for the API's requests, Redis and files
RESERVED_FDS = 100
MAX_SOCKETS = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1_000_000) - RESERVED_FDS
# The page closes its socket itself once it has the final state (form_ws.html); the server closes it only when the
# client has not, CLOSE_AFTER seconds later. A close costs the server more than a state sent: made at once, the closes
# of a task's thousand sockets would delay the states of every other task that ends at the same moment.
CLOSE_AFTER = 1


@asynccontextmanager
async def lifespan(app: FastAPI):
    url = app.state.celery.conf.result_backend
    if not url.startswith("redis"):  # the testing settings: no Redis to push from
        app.state.redis = app.state.channels = None
        yield
        return
    # Reads of the stored states, a few at a time: sockets opened together wait their turn, not for a connection each.
    # A read is made once more, at once, on a connection error: after Redis restarted, the pooled connections are
    # dead, and the first read on each would fail though Redis answers.
    pool = BlockingConnectionPool.from_url(url, max_connections=2, timeout=30, retry=Retry(NoBackoff(), 1))
    app.state.redis = Redis(connection_pool=pool)
    app.state.channels = Channels(url)
    # Both connections opened now: a burst of sockets may leave no file descriptor to open them with later
    with suppress(RedisConnectionError):
        await asyncio.gather(app.state.redis.ping(), app.state.redis.ping())
    # Python's collector looks for reference cycles every 700 new objects, and through every object of the process
    # each time their number grew by a quarter. Each open socket holds a few hundred objects: with thousands open, a
    # full pass takes a large part of a second, during which no state is sent. Looked for every 50,000 new objects,
    # and through everything only once 20 x 20 such passes are made; cycles are still freed, a little later.
    gc.set_threshold(50_000, 20, 20)
    yield
    await app.state.channels.aclose()
    await app.state.redis.aclose()


def status_json(task_id, meta):
    """The JSON of a task's state; meta is what the result backend stored."""
    state, result = meta["status"], meta["result"]
    retries = meta.get("retries") or 0
    # RETRY is stored before the retry runs, so it counts the retry it announces
    if state == "RETRY":
        retries += 1
    return {
        "task_id": task_id,
        "state": state,
        "retries": retries,
        "result": result if state in ("SUCCESS", "PROGRESS") else None,
        "error": f"{type(result).__name__}: {result}" if state in ("RETRY", "FAILURE") else None,
    }


@status_router.get("/tasks/{task_id}")
def get_status(task_id: str, request: Request):
    return status_json(task_id, request.app.state.celery.backend.get_task_meta(task_id))


def message(task_id, meta):
    """A state as the sockets send it: its JSON text, and whether it is the last (SUCCESS or FAILURE)."""
    status = status_json(task_id, meta)
    return json.dumps(status, separators=(",", ":"), ensure_ascii=False), status["state"] in READY_STATES


def published(backend, task_id, data):
    """A state the worker published, made into a message once for all the sockets of its task (Channels.dispatch)."""
    return message(task_id, backend.decode_result(data))


async def push_states(websocket: WebSocket, task_id, key, watcher):
    """Every state of the task, in order, from the one stored now to SUCCESS or FAILURE. The watcher was subscribed
    before the stored state is read: whatever is stored from now on reaches it."""
    stored = await websocket.app.state.redis.get(key)
    meta = websocket.app.state.celery.backend.decode_result(stored) if stored else {"status": "PENDING", "result": None}
    text, last = message(task_id, meta)
    # Starlette has no write that does not wait (websocket.send_text is a coroutine), so each socket sends from a
    # coroutine of its own; the subscriber only hands it the text, made once
    await websocket.send_text(text)
    while not last:
        new, last = await watcher.get()
        # Not the state just sent again: it may be stored between subscribing and reading
        if new != text:
            text = new
            await websocket.send_text(text)


def reason(text):
    """A close reason cut to the bytes RFC 6455 allows, never inside a character."""
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


@status_router.websocket("/ws/task_status/{task_id}")
async def ws_task_status(websocket: WebSocket, task_id: str):
    channels = websocket.app.state.channels
    await websocket.accept()
    if channels is None:
        return await websocket.close(1011, "no Redis result backend to push from")
    if channels.sockets >= MAX_SOCKETS:
        return await websocket.close(TRY_AGAIN_LATER, reason(f"this server holds {MAX_SOCKETS} sockets: try later"))
    channels.sockets += 1
    key = websocket.app.state.celery.backend.get_key_for_task(task_id)
    # A client says nothing: this ends when it goes, the page's own close after the final state included
    leaving = asyncio.create_task(websocket.receive())
    try:
        async with channels.watch(key, partial(published, websocket.app.state.celery.backend, task_id)) as watcher:
            pushing = asyncio.create_task(push_states(websocket, task_id, key, watcher))
            done, _ = await asyncio.wait({pushing, leaving, watcher.behind}, return_when=asyncio.FIRST_COMPLETED)
            pushing.cancel()
            # Waited for, so that the socket's channel is left before the socket closes
            await asyncio.gather(pushing, return_exceptions=True)
        if watcher.behind in done:
            return await websocket.close(TOO_FAR_BEHIND, f"too far behind: {QUEUE_SIZE} states unsent")
        if pushing in done:
            # Any error but Redis's is raised: the server logs it and closes the socket with 1011
            pushing.result()
            # The final state is sent, and the channel left: the page closes the socket now, or the server does
            await asyncio.wait({leaving}, timeout=CLOSE_AFTER)
            if not leaving.done():
                await websocket.close()
    except (RedisConnectionError, OSError) as error:
        await websocket.close(1011, reason(f"Redis is unreachable: {error}"))
    except WebSocketDisconnect:
        # The client went at the same moment: there is nothing left to close
        pass
    finally:
        leaving.cancel()
        channels.sockets -= 1
