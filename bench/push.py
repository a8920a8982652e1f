"""c. push against poll: how long after a task ends its watchers know it, and what it costs them, WebSocket (ch06)
against chapter 5's polling once a second, at 1, 100, 1,000 and 10,000 watchers (10,000: push only); the web
process's Redis connections and memory per watcher while they watch; and, under `ulimit -n 1024`, how many of
1,500 watchers it serves, how it refuses the rest, and whether its API still answers meanwhile.

Run: ./run_all.sh bench push (on Linux: it reads /proc, and uses prlimit). Chapter 6's app; up to 20 tasks, sent
50 ms apart once every watcher is in place, each taking 1 s (the stand-in's delay; a worker of 20 threads runs them
together); each watcher watches one of them, from this process's asyncio clients.
The end of a task is the `date_done` the worker stores with its result; the same clock tells when a watcher knew.
"""

import asyncio
import json
import os
import random
import resource
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import websockets

from common import ROOT, SHORT, chapter_env, free_port, machine, percentile, redis_server, stand_in, table, web, worker

CHAPTER = ROOT / "ch06_websocket"
WATCHERS = (1, 100) if SHORT else (1, 100, 1000, 10_000)
POLLED_UP_TO = 1000  # 10,000 pollers would ask for 10,000 requests a second, more than one process answers
LIMITED = (1024, 300 if SHORT else 1500)  # ulimit -n, and the watchers asked for under it
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
    """Chapter 5's page: GET /tasks/{id}, then a second's pause, until the task is done. When it knew; how many GETs."""
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
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/task_status/{task_id}", max_queue=None, open_timeout=60
    ) as socket:
        async for message in socket:
            state = json.loads(message)["state"]
            if state == "PENDING":  # the first message: subscribed
                ready.release()
            if state in ("SUCCESS", "FAILURE"):
                return time.time(), 0


def redis_connections(pid, redis_port):
    """The TCP connections process pid holds to Redis, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == redis_port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def cpu_seconds(pid):
    """The processor time process pid has used, user and system, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid):
    """The resident memory of process pid, in bytes."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


async def run(port, celery, watch, watchers, measure=None):
    """p50 and p99 of the delays, the requests each watcher made, and what measure() gave while every watcher was in
    place. A single watcher watches ten tasks one after the other, so that its figures are not one draw."""
    rounds = [
        await one_round(port, celery, watch, watchers, measure)
        for _ in range(1 if watchers > 1 else 3 if SHORT else 10)
    ]
    delays, requests = sum((r[0] for r in rounds), []), sum((r[1] for r in rounds), [])
    return percentile(delays, 50), percentile(delays, 99), sum(requests) / len(requests), rounds[0][2]


async def one_round(port, celery, watch, watchers, measure):
    """Every watcher in place first; then the tasks, sent 50 ms apart so that they end apart as real ones do."""
    task_ids = [str(uuid.uuid4()) for _ in range(min(TASKS, watchers))]
    ready = asyncio.Semaphore(0)
    watching = asyncio.gather(*(watch(port, task_ids[n % len(task_ids)], ready) for n in range(watchers)))
    for _ in range(watchers):
        await asyncio.wait_for(ready.acquire(), 120)
    measured = measure() if measure else None
    for n, task_id in enumerate(task_ids):
        celery.send_task("tasks.subscribe", [f"w{n}@example.com"], task_id=task_id)
        await asyncio.sleep(0.05)
    knew = await asyncio.wait_for(watching, 300)
    ended = {task_id: ended_at(celery.backend.get_task_meta(task_id)) for task_id in task_ids}
    delays = [(when - ended[task_ids[n % len(task_ids)]]) * 1000 for n, (when, _) in enumerate(knew)]
    return delays, [r for _, r in knew], measured


async def limited(url, celery, watchers):
    """Under a low open-file limit: watchers ask at once, on 20 tasks; how many got PENDING and then their final
    state, how many were refused and how, and how long GET / took while they were all asked for."""
    port = int(url.rsplit(":", 1)[1])
    task_ids = [str(uuid.uuid4()) for _ in range(TASKS)]
    subscribed = asyncio.Semaphore(0)

    async def one(task_id):
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/task_status/{task_id}", max_queue=None, open_timeout=60
            ) as socket:
                async for message in socket:
                    state = json.loads(message)["state"]
                    if state == "PENDING":
                        subscribed.release()
                    if state in ("SUCCESS", "FAILURE"):
                        return "final state"
                return f"closed {socket.close_code}"
        except websockets.ConnectionClosed as closed:
            return f"closed {closed.rcvd.code if closed.rcvd else 'without a close frame'}"
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            return type(exc).__name__

    everyone = asyncio.gather(*(one(task_ids[n % TASKS]) for n in range(watchers)))
    await asyncio.sleep(2)  # every socket asked for, the ones past the limit refused
    start = time.perf_counter()
    status = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/", timeout=30).status)
    api_ms = (time.perf_counter() - start) * 1000
    held = subscribed._value
    for n, task_id in enumerate(task_ids):
        celery.send_task("tasks.subscribe", [f"l{n}@example.com"], task_id=task_id)
    outcomes = await asyncio.wait_for(everyone, 300)
    return held, {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}, status, api_ms


def ended_at(meta):
    done = datetime.fromisoformat(meta["date_done"])
    return (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()  # stored in UTC


def main():
    print(f"Machine: {machine()}")
    # 10,000 sockets take 10,000 open files here and in the web process: up to the hard limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with redis_server() as redis_url:
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        env = chapter_env(redis_url, THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1")
        from celery import Celery

        celery = Celery(broker=redis_url, backend=redis_url)
        with stand_in(CHAPTER, env), worker(CHAPTER, env, "--pool=threads", f"--concurrency={TASKS}"):
            with web(CHAPTER, env) as url:
                port = int(url.rsplit(":", 1)[1])

                def measure(watchers):
                    before = rss(url.pid)
                    return lambda: (redis_connections(url.pid, redis_port), (rss(url.pid) - before) / watchers)

                # every push first: the connections counted are the pushes' alone, not GET /tasks's too
                pushes, cpu = [], []
                for w in WATCHERS:
                    before = cpu_seconds(url.pid), time.process_time()
                    pushes.append(asyncio.run(run(port, celery, listen, w, measure(w))))
                    cpu.append((cpu_seconds(url.pid) - before[0], time.process_time() - before[1]))
                polls = [asyncio.run(run(port, celery, poll, w)) if w <= POLLED_UP_TO else None for w in WATCHERS]
                rows = list(zip(WATCHERS, pushes, polls, strict=True))
            open_files, asked = LIMITED
            with web(CHAPTER, env, open_files=open_files) as url:
                held, outcomes, api_status, api_ms = asyncio.run(limited(url, celery, asked))
    table(
        "From a task's end to its watchers knowing (ms), the HTTP requests each watcher made, and what the web process"
        " holds while they watch",
        [
            "watchers",
            "push p50",
            "push p99",
            "poll p50",
            "poll p99",
            "poll: requests each",
            "push: requests each",
            "Redis connections (push)",
            "memory per watcher (push)",
        ],
        [
            (
                f"{w:,}",
                f"{pushed[0]:.1f}",
                f"{pushed[1]:.1f}",
                f"{polled[0]:.0f}" if polled else "-",
                f"{polled[1]:.0f}" if polled else "-",
                f"{polled[2]:.1f}" if polled else "-",
                "0 (1 socket)",
                pushed[3][0],
                f"{pushed[3][1] / 1024:.1f} KiB" if w >= 100 else "-",
            )
            for w, pushed, polled in rows
        ],
    )
    for watchers, pushed, polled in rows:
        if polled:
            print(
                f"{watchers:,} watcher{'s' * (watchers > 1)}: push knows {polled[0] / pushed[0]:.0f}x sooner than"
                f" polling (p50), {polled[1] / pushed[1]:.0f}x (p99)."
            )
    for watchers, (server, clients) in zip(WATCHERS, cpu, strict=True):
        print(
            f"{watchers:,} watcher{'s' * (watchers > 1)}, pushed: the web process used {server:.1f} s of processor,"
            f" the watchers' clients {clients:.1f} s."
        )
    print(
        f"\nUnder ulimit -n {open_files}, {asked:,} watchers asked at once: {held:,} held 2 s later (PENDING received);"
        f" in the end {', '.join(f'{n:,} {outcome}' for outcome, n in outcomes.items())};"
        f" GET / answered {api_status} in {api_ms:.0f} ms meanwhile."
    )


if __name__ == "__main__":
    main()
