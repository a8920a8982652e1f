"""c. push against poll: how long after a task ends its watchers know it, and what it costs the server to tell them.

WebSocket (ch06) against chapter 5's polling once a second, at 1, 100 and 1,000 watchers, with the web process's
Redis connections and memory per watcher while they watch; then, at 10,000 watchers, chapter 6 in one web process
and under `uvicorn --workers 2` against two references that push the same states to the same clients and do
nothing else (bench/push_bare.py: a bare `websockets` server with websockets.broadcast(), and a bare Starlette
endpoint): the delays, and each server's processor time per message delivered; and, under `ulimit -n 1024`, how
many of 1,500 watchers chapter 6 serves, how it refuses the rest, and whether its API still answers meanwhile.

Run: ./run_all.sh bench push (Linux: it reads /proc, and uses prlimit); --short: fewer watchers, fewer rounds.
Chapter 6's app as its Procfile's web line starts it (its flags, without --reload); up to 20 tasks, sent 50 ms apart
once every watcher is in place, each taking 1 s (the stand-in's delay; a worker of 20 threads runs them together);
each watcher watches one of them, from clients spread over 4 processes (bench/watchers.py), the same processes for
every server. A watcher closes its socket once it has the final state, as chapter 6's page does.
The end of a task is the `date_done` the worker stores with its result; the same clock tells when a watcher knew.
A server's processor time (user and system, of its process and the ones it started, from /proc) is counted from
the moment every watcher is in place until every socket is closed: sending, and everything else the burst costs it.
"""

import json
import os
import queue
import resource
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from common import (
    ROOT,
    SHORT,
    Url,
    chapter_env,
    cpu_seconds,
    free_port,
    http_answers,
    machine,
    percentile,
    process_tree,
    redis_server,
    stand_in,
    table,
    terminals,
    wait_until,
    web,
    web_flags,
    worker,
)

CHAPTER = ROOT / "ch06_websocket"
WATCHERS = (1, 100) if SHORT else (1, 100, 1000)  # push and poll
COMPARED = 1000 if SHORT else 10_000  # the servers compared, push only: 10,000 pollers would ask 10,000 times a second
COMPARED_ROUNDS = 1 if SHORT else 2  # of each server compared, taking turns
LIMITED = (1024, 300 if SHORT else 1500)  # ulimit -n, and the watchers asked for under it
TASKS = 20
CLIENT_PROCESSES = 4
HANDSHAKES = 100  # sockets each client process opens at once: more would overflow the server's listen backlog
NO_DEFLATE = ["--ws-per-message-deflate", "false"]  # the references': see push_bare.py


class Clients:
    """CLIENT_PROCESSES processes of bench/watchers.py, the watchers spread over them evenly."""

    def __init__(self, started):
        self.replies = queue.Queue()
        self.processes = [
            started(
                sys.executable,
                str(ROOT / "bench" / "watchers.py"),
                stdin=subprocess.PIPE,
                on_line=lambda line, n=n: self.replies.put((n, line)),
            )
            for n in range(CLIENT_PROCESSES)
        ]
        self.pids = [process.pid for process in self.processes]

    def watch(self, mode, port, task_ids, watchers, wait=None, handshakes=HANDSHAKES):
        """The watchers started, `mode` "listen" or "poll", on `port`: how many are in place once all are (or after
        `wait` seconds)."""
        self.busy, first = [], 0
        for n, process in enumerate(self.processes):
            count = watchers // CLIENT_PROCESSES + (n < watchers % CLIENT_PROCESSES)
            if count:
                order = {"mode": mode, "port": port, "tasks": task_ids, "first": first, "count": count}
                process.proc.stdin.write(json.dumps(order | {"wait": wait, "handshakes": handshakes}) + "\n")
                process.proc.stdin.flush()
                self.busy.append(n)
                first += count
        return sum(reply["subscribed"] for reply in self.collect())

    def ended(self):
        """How each watcher ended, when it knew (or None), and its messages or requests, in the watchers' order."""
        replies = self.collect()
        return [sum((reply[key] for reply in replies), []) for key in ("outcomes", "knew", "counts")]

    def collect(self):
        """The next JSON line of each busy process, in the processes' order."""
        replies, deadline = {}, time.monotonic() + 300
        while len(replies) < len(self.busy):
            try:
                n, line = self.replies.get(timeout=1)
            except queue.Empty:
                if ended := [process for process in self.processes if not process.running()]:
                    sys.exit(f"bench: a process of watchers ended:\n{ended[0].output}")
                if time.monotonic() > deadline:
                    sys.exit("bench: the watchers' clients did not answer in 300 s")
                continue
            if line.startswith("{"):
                replies[n] = json.loads(line)
        return [replies[n] for n in self.busy]


@contextmanager
def bare_websockets(env, processes):
    """bench/push_bare.py's websockets server, in `processes` processes: its URL (.pid: its process) once it
    answers."""
    port = free_port()
    with terminals(CHAPTER.name, env) as started:
        process = started(sys.executable, str(ROOT / "bench" / "push_bare.py"), str(port), str(processes), keep=False)
        url = Url(f"http://127.0.0.1:{port}")
        url.pid = process.pid
        # it answers a plain GET with 426 Upgrade Required: up
        wait_until(lambda: process.exited() or http_answers(f"{url}/"), 30, "push_bare.py")
        yield url


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


def rss(pid):
    """The resident memory of process pid, in bytes."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


class Round:
    """One round: every watcher in place first, then the tasks, sent 50 ms apart so that they end apart as real ones
    do. .delays (ms), .lost, .counts (each watcher's messages or requests), .server_cpu and .clients_cpu (s, from every
    watcher in place to every socket closed), .measured: what measure() gave while every watcher was in place."""

    def __init__(self, url, clients, celery, mode, watchers, measure=None):
        task_ids = [str(uuid.uuid4()) for _ in range(min(TASKS, watchers))]
        clients.watch(mode, int(url.rsplit(":", 1)[1]), task_ids, watchers)
        self.measured = measure() if measure else None
        server = process_tree(url.pid)  # uvicorn --workers: the supervisor and its workers
        before = cpu_seconds(server), cpu_seconds(clients.pids)
        for n, task_id in enumerate(task_ids):
            celery.send_task("tasks.subscribe", [f"w{n}@example.com"], task_id=task_id)
            time.sleep(0.05)
        outcomes, knew, self.counts = clients.ended()
        self.server_cpu, self.clients_cpu = cpu_seconds(server) - before[0], cpu_seconds(clients.pids) - before[1]
        # any watcher without its final state (none, but for a fault), by how it ended
        self.lost = Counter(outcome for outcome in outcomes if outcome != "final state")
        ended = {task_id: ended_at(celery.backend.get_task_meta(task_id)) for task_id in task_ids}
        self.delays = [(when - ended[task_ids[n % len(task_ids)]]) * 1000 for n, when in enumerate(knew) if when]


def ended_at(meta):
    done = datetime.fromisoformat(meta["date_done"])
    return (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()  # stored in UTC


class Rounds:
    """What rounds of the same server and watchers sum up to: .p50 and .p99 of all their delays (ms), .each: the
    mean messages or requests of a watcher, .messages: all those it received, .server_cpu and .clients_cpu per
    message (µs), .lost: the watchers without their final state, by how they ended; .measured: the first round's."""

    def __init__(self, rounds):
        delays, counts = sum((r.delays for r in rounds), []), sum((r.counts for r in rounds), [])
        self.p50, self.p99, self.messages = percentile(delays, 50), percentile(delays, 99), sum(counts)
        self.each = self.messages / len(counts)
        self.server_cpu = sum(r.server_cpu for r in rounds) / self.messages * 1e6
        self.clients_cpu = sum(r.clients_cpu for r in rounds) / self.messages * 1e6
        self.measured = rounds[0].measured
        self.lost = sum((r.lost for r in rounds), Counter())


def watched(url, clients, celery, mode, watchers, measure=None):
    """Rounds of `watchers` watching: one, or ten of a single watcher watching a task after the other, so that its
    figures are not one draw."""
    return Rounds(
        [Round(url, clients, celery, mode, watchers, measure) for _ in range(1 if watchers > 1 else 3 if SHORT else 10)]
    )


def limited(url, clients, celery, watchers):
    """Under a low open-file limit: watchers ask at once, on 20 tasks; how many got PENDING 2 s later, how each
    ended, refused or not, and how long GET / took while they were all asked for."""
    task_ids = [str(uuid.uuid4()) for _ in range(TASKS)]
    held = clients.watch("listen", int(url.rsplit(":", 1)[1]), task_ids, watchers, wait=2, handshakes=None)
    start = time.perf_counter()
    status = urllib.request.urlopen(f"{url}/", timeout=30).status
    api_ms = (time.perf_counter() - start) * 1000
    for n, task_id in enumerate(task_ids):
        celery.send_task("tasks.subscribe", [f"l{n}@example.com"], task_id=task_id)
    outcomes = clients.ended()[0]
    return held, {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}, status, api_ms


def main():
    print(f"Machine: {machine()}")
    # 10,000 sockets take 10,000 open files in the web process, 2,500 in each client process: up to the hard limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    flags = web_flags(CHAPTER)
    with redis_server() as redis_url:
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        env = chapter_env(redis_url, THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1")
        from celery import Celery

        celery = Celery(broker=redis_url, backend=redis_url)
        with (
            stand_in(CHAPTER, env),
            worker(CHAPTER, env, "--pool=threads", f"--concurrency={TASKS}"),
            terminals(CHAPTER, env) as started,
            ExitStack() as servers,
        ):
            clients = Clients(started)
            url = servers.enter_context(web(CHAPTER, env, flags=flags))

            def measure(watchers):
                before = rss(url.pid)
                return lambda: (redis_connections(url.pid, redis_port), (rss(url.pid) - before) / watchers)

            # every push first: the connections counted are the pushes' alone, not GET /tasks's too
            pushes = [watched(url, clients, celery, "listen", w, measure(w)) for w in WATCHERS]
            # (server, its processes) -> its URL: all of them up at once, so that their rounds can take turns
            others = {
                ("bare websockets.broadcast()", 1): bare_websockets(env, 1),
                ("bare Starlette, send_text in a loop", 1): web(CHAPTER, env, "push_bare:app", flags=NO_DEFLATE),
                ("ch06", 2): web(CHAPTER, env, flags=[*flags, "--workers", "2"]),
                ("bare websockets.broadcast()", 2): bare_websockets(env, 2),
                ("bare Starlette, send_text in a loop", 2): web(
                    CHAPTER, env, "push_bare:app", flags=[*NO_DEFLATE, "--workers", "2"]
                ),
            }
            urls = {("ch06", 1): url} | {key: servers.enter_context(server) for key, server in others.items()}
            # the servers take turns, round after round, so that a machine busier for a while slows them alike
            rounds = {key: [] for key in urls}
            for n in range(COMPARED_ROUNDS):
                for key, server in urls.items():
                    mine = measure(COMPARED) if key == ("ch06", 1) and not n else None
                    rounds[key].append(Round(server, clients, celery, "listen", COMPARED, mine))
            compared = {key: Rounds(each) for key, each in rounds.items()}
            pushes.append(compared["ch06", 1])
            polls = [watched(url, clients, celery, "poll", w) for w in WATCHERS]
            open_files, asked = LIMITED
            with web(CHAPTER, env, open_files=open_files, flags=flags) as limited_url:
                held, outcomes, api_status, api_ms = limited(limited_url, clients, celery, asked)
    print(f"\nch06's web app: {shlex.join(['uvicorn', 'main:app', *flags])} (its Procfile's flags, without --reload)")
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
                f"{pushed.p50:.1f}",
                f"{pushed.p99:.1f}",
                f"{polled.p50:.0f}" if polled else "-",
                f"{polled.p99:.0f}" if polled else "-",
                f"{polled.each:.1f}" if polled else "-",
                "0 (1 socket)",
                pushed.measured[0],
                f"{pushed.measured[1] / 1024:.1f} KiB" if w >= 100 else "-",
            )
            for w, pushed, polled in zip((*WATCHERS, COMPARED), pushes, (*polls, None), strict=True)
        ],
    )
    for w, pushed, polled in zip(WATCHERS, pushes, polls, strict=False):  # the compared row: no poll
        print(
            f"{w:,} watcher{'s' * (w > 1)}: push knows {polled.p50 / pushed.p50:.0f}x sooner than polling (p50),"
            f" {polled.p99 / pushed.p99:.0f}x (p99)."
        )

    def against_bare(processes, one):
        """p99 and the server's processor time per message over the bare websockets.broadcast() server's, with as
        many processes."""
        bare = compared["bare websockets.broadcast()", processes]
        return one.p99 / bare.p99, one.server_cpu / bare.server_cpu

    table(
        f"{COMPARED:,} watchers on {TASKS} tasks, each told STARTED then SUCCESS, the servers taking turns"
        f" ({COMPARED_ROUNDS} round{'s' * (COMPARED_ROUNDS > 1)} each): the delays (ms), and the processor time per"
        " message delivered (µs) of the server and of the clients",
        [
            "server",
            "processes",
            "p50",
            "p99",
            "server CPU / message",
            "clients CPU / message",
            "clients' share",
            "p99 / bare broadcast's",
            "CPU / bare broadcast's",
        ],
        [
            (
                name,
                processes,
                f"{one.p50:.1f}",
                f"{one.p99:.1f}",
                f"{one.server_cpu:.1f}",
                f"{one.clients_cpu:.1f}",
                f"{one.clients_cpu / (one.clients_cpu + one.server_cpu):.0%}",
                *(f"{ratio:.1f}" for ratio in against_bare(processes, one)),
            )
            for (name, processes), one in sorted(compared.items(), key=lambda item: item[0][1])
        ],
    )
    messages = " or ".join(sorted({f"{one.messages:,}" for one in compared.values()}))
    print(
        f"Messages delivered to each server's watchers: {messages}."
        " Clients' share: the clients' part of the processor time that the server and they used in the burst."
    )
    for (name, processes), one in compared.items():
        if one.lost:
            print(f"{name} ({processes}): {one.lost.total()} watchers without their final state: {dict(one.lost)}")
    p99_ratio, cpu_ratio = against_bare(1, compared["ch06", 1])
    print(
        f"ch06 in one web process: p99 {p99_ratio:.1f}x the bare websockets.broadcast()'s,"
        f" the server's processor time per message {cpu_ratio:.1f}x."
    )
    print(
        f"\nUnder ulimit -n {open_files}, {asked:,} watchers asked at once: {held:,} held 2 s later (PENDING received);"
        f" in the end {', '.join(f'{n:,} {outcome}' for outcome, n in outcomes.items())};"
        f" GET / answered {api_status} in {api_ms:.0f} ms meanwhile."
    )


if __name__ == "__main__":
    main()
