"""The watchers' clients of bench/push.py: one process of them, so that the benchmark can spread them over several
and the server, not one process of clients, is what limits how fast they know.

Usage (bench/push.py starts it): python bench/watchers.py, then one JSON order a line on stdin, for each round:
    {"mode": "listen" or "poll", "port": 8000, "tasks": [ids], "first": 0, "count": 2500, "wait": null,
     "handshakes": 100}
Watcher n (first <= n < first + count) watches tasks[n % len(tasks)]. The process answers each order with two JSON
lines on stdout: {"subscribed": how many are in place}, once each is or has ended (or after `wait` seconds); then
{"outcomes": [...], "knew": [...], "counts": [...]}, once all have ended: for each watcher how it ended ("final
state", "closed 1013", an error's name), when it had the final state (time.time(), or null), and the messages it
received after the first (listen) or the requests it made (poll). At most `handshakes` sockets open at once (null:
all at once). It ends at the end of its input. Its event loop is uvloop's (which uvicorn[standard] installs), the
lightest there is: what the clients spend is taken from the server, on the same cores.
"""

import asyncio
import json
import random
import sys
import time

import uvloop
import websockets

FINAL_STATES = ("SUCCESS", "FAILURE")


async def listen(port, task_id, subscribed, opening):
    """Chapter 6's page: a WebSocket, whose first message says the server has subscribed; closed by the client once
    it has the final state, as the page closes it. In place within a minute, or given up (TimeoutError)."""
    url = f"ws://127.0.0.1:{port}/ws/task_status/{task_id}"
    try:
        async with asyncio.timeout(60):
            async with opening:
                socket = await websockets.connect(url, max_queue=None, open_timeout=None)
        async with socket:
            async with asyncio.timeout(60):
                await socket.recv()
            subscribed()
            messages = 0
            async with asyncio.timeout(300):
                async for message in socket:
                    messages += 1
                    if json.loads(message)["state"] in FINAL_STATES:
                        return "final state", time.time(), messages
            return f"closed {socket.close_code}", None, messages
    except websockets.ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else 'without a close frame'}", None, 0
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        return type(exc).__name__, None, 0


async def poll(port, task_id, subscribed, opening):
    """Chapter 5's page: GET /tasks/{id}, then a second's pause, until the task is done, on one kept-alive
    connection."""
    async with opening:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    subscribed()
    await asyncio.sleep(random.random())  # pages are opened at any moment, not all at once
    requests = 0
    while True:
        writer.write(f"GET /tasks/{task_id} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
        requests += 1
        if json.loads(await reader.readexactly(length))["state"] in FINAL_STATES:
            writer.close()
            return "final state", time.time(), requests
        await asyncio.sleep(1)


async def one_round(order):
    watch, count, tasks = {"listen": listen, "poll": poll}[order["mode"]], order["count"], order["tasks"]
    in_place = settled = 0  # the watchers in place; and those plus the ones that ended before they were
    everyone_settled = asyncio.Event()

    def settle():
        nonlocal settled
        settled += 1
        if settled == count:
            everyone_settled.set()

    async def watcher(task_id):
        placed = False

        def subscribed():
            nonlocal placed, in_place
            placed, in_place = True, in_place + 1
            settle()

        outcome = await watch(order["port"], task_id, subscribed, opening)
        if not placed:
            settle()
        return outcome

    opening = asyncio.Semaphore(order["handshakes"] or count)
    n = range(order["first"], order["first"] + count)
    everyone = asyncio.gather(*(watcher(tasks[i % len(tasks)]) for i in n))
    if order["wait"]:
        await asyncio.sleep(order["wait"])
    else:
        await everyone_settled.wait()
    print(json.dumps({"subscribed": in_place}), flush=True)
    outcomes, knew, counts = zip(*await everyone, strict=True)
    print(json.dumps({"outcomes": outcomes, "knew": knew, "counts": counts}), flush=True)


if __name__ == "__main__":
    for line in sys.stdin:
        uvloop.run(one_round(json.loads(line)))
