"""c. push against poll: how long after a task ends its watchers know it, and what it costs them, WebSocket (ch06)
against chapter 5's polling once a second, at 1, 100 and 1,000 watchers.

Run: ./run_all.sh bench push. Chapter 6's app; up to 20 tasks, sent 50 ms apart once every watcher is in place, each
taking 1 s (the stand-in's delay; a worker of 20 threads runs them together); each watcher watches one of them, from
this process's asyncio clients.
The end of a task is the `date_done` the worker stores with its result; the same clock tells when a watcher knew.
"""

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime

import websockets

from common import ROOT, SHORT, chapter_env, free_port, machine, percentile, redis_server, stand_in, table, web, worker

CHAPTER = ROOT / "ch06_websocket"
WATCHERS = (1, 100) if SHORT else (1, 100, 1000)
TASKS = 20


async def http(reader, writer, method, path, body=b""):
    """One request on a kept-alive connection: the answer's JSON."""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    return json.loads(await reader.readexactly(length))


async def poll(port, task_id, ready):
    """Chapter 5's page: GET /tasks/{id}, then a second's pause, until the task is done. When it knew, and how many
    GETs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    ready.release()
    await asyncio.sleep(random.random())  # pages are opened at any moment, not all at once
    requests = 0
    while True:
        status = await http(reader, writer, "GET", f"/tasks/{task_id}")
        requests += 1
        if status["state"] in ("SUCCESS", "FAILURE"):
            writer.close()
            return time.time(), requests
        await asyncio.sleep(1)


async def listen(port, task_id, ready):
    """Chapter 6's page: a WebSocket, until the server closes it. When it knew; no request at all."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/task_status/{task_id}", max_queue=None) as socket:
        async for message in socket:
            state = json.loads(message)["state"]
            if state == "PENDING":  # the first message: subscribed
                ready.release()
            if state in ("SUCCESS", "FAILURE"):
                return time.time(), 0


async def run(port, celery, watch, watchers):
    """p50 and p99 of the delays, and the requests each watcher made. A single watcher watches ten tasks one after
    the other, so that its figures are not one draw."""
    rounds = [await one_round(port, celery, watch, watchers) for _ in range(1 if watchers > 1 else 3 if SHORT else 10)]
    delays, requests = sum((r[0] for r in rounds), []), sum((r[1] for r in rounds), [])
    return percentile(delays, 50), percentile(delays, 99), sum(requests) / len(requests)


async def one_round(port, celery, watch, watchers):
    """Every watcher in place first; then the tasks, sent 50 ms apart so that they end apart as real ones do."""
    task_ids = [str(uuid.uuid4()) for _ in range(min(TASKS, watchers))]
    ready = asyncio.Semaphore(0)
    watching = asyncio.gather(*(watch(port, task_ids[n % len(task_ids)], ready) for n in range(watchers)))
    for _ in range(watchers):
        await asyncio.wait_for(ready.acquire(), 60)
    for n, task_id in enumerate(task_ids):
        celery.send_task("tasks.subscribe", [f"w{n}@example.com"], task_id=task_id)
        await asyncio.sleep(0.05)
    knew = await asyncio.wait_for(watching, 120)
    ended = {task_id: ended_at(celery.backend.get_task_meta(task_id)) for task_id in task_ids}
    return [(when - ended[task_ids[n % len(task_ids)]]) * 1000 for n, (when, _) in enumerate(knew)], [
        r for _, r in knew
    ]


def ended_at(meta):
    done = datetime.fromisoformat(meta["date_done"])
    return (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()  # stored in UTC


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url:
        env = chapter_env(redis_url, THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1")
        with (
            stand_in(CHAPTER, env),
            web(CHAPTER, env) as url,
            worker(CHAPTER, env, "--pool=threads", f"--concurrency={TASKS}"),
        ):
            port = int(url.rsplit(":", 1)[1])
            from celery import Celery

            celery = Celery(broker=redis_url, backend=redis_url)
            rows = []
            for watchers in WATCHERS:
                rows.append(
                    (
                        watchers,
                        asyncio.run(run(port, celery, listen, watchers)),
                        asyncio.run(run(port, celery, poll, watchers)),
                    )
                )
    table(
        "From a task's end to its watchers knowing (ms), and the HTTP requests each watcher made",
        ["watchers", "push p50", "push p99", "poll p50", "poll p99", "poll: requests each", "push: requests each"],
        [
            (
                f"{w:,}",
                f"{pushed[0]:.1f}",
                f"{pushed[1]:.1f}",
                f"{polled[0]:.0f}",
                f"{polled[1]:.0f}",
                f"{polled[2]:.1f}",
                "0 (1 socket)",
            )
            for w, pushed, polled in rows
        ],
    )
    for watchers, pushed, polled in rows:
        print(
            f"{watchers:,} watcher{'s' * (watchers > 1)}: push knows {polled[0] / pushed[0]:.0f}x sooner"
            " than polling (p50), "
            f"{polled[1] / pushed[1]:.0f}x (p99)."
        )


if __name__ == "__main__":
    main()
