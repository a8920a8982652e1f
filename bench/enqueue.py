"""a. enqueue: how fast POST /divide hands tasks to Celery, against divide.apply_async() called in a plain loop.

Run: ./run_all.sh bench enqueue. The web app is ch03's, under uvicorn, with no worker: tasks only pile up in the queue.
"""

import json
import subprocess
import sys
from contextlib import contextmanager

from common import ROOT, SHORT, chapter_env, machine, redis_server, table, web, wrk

CHAPTER = ROOT / "ch03_divide"
SECONDS = 1 if SHORT else 3
BODY = '{"x": 1, "y": 2}'

RAW = """
import json, sys, time
from main import divide
divide.delay(1, 2)  # connected
latencies, end = [], time.perf_counter() + float(sys.argv[1])
while (start := time.perf_counter()) < end:
    divide.apply_async((1, 2))
    latencies.append(time.perf_counter() - start)
print(json.dumps(latencies))
"""


def raw(env):
    """divide.apply_async() in a loop, in a process of its own as the web app is: calls a second, p50, p99 (ms)."""
    out = subprocess.run(
        [sys.executable, "-c", RAW, str(SECONDS)], cwd=CHAPTER, env=env, capture_output=True, text=True
    )
    latencies = sorted(json.loads(out.stdout or sys.exit(out.stderr)))
    return len(latencies) / SECONDS, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


@contextmanager
def rabbitmq():
    """A virtual host of its own on the RabbitMQ at 127.0.0.1:5672, if there is one and rabbitmqctl works."""
    import uuid

    import kombu

    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        kombu.Connection("amqp://guest:guest@127.0.0.1:5672//", connect_timeout=2).ensure_connection(max_retries=1)
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], capture_output=True, check=True)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], capture_output=True, check=True
        )
    except Exception:
        yield None
        return
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


def measure(env):
    with web("ch03_divide", env, "enqueue_app:app") as url:
        rows = {
            "GET / (c20)": wrk(f"{url}/", 20, SECONDS),
            "POST /divide (c1)": wrk(f"{url}/divide", 1, SECONDS, BODY),
            "POST /divide (c20)": wrk(f"{url}/divide", 20, SECONDS, BODY),
            "validation only (c1)": wrk(f"{url}/validate", 1, SECONDS, BODY),
            "validation, in the thread pool (c1)": wrk(f"{url}/validate_in_thread", 1, SECONDS, BODY),
            "divide.delay() on the event loop (c1)": wrk(f"{url}/divide_on_loop", 1, SECONDS, BODY),
        }
    rows["divide.apply_async() in a loop"] = raw(env)
    return rows


def report(broker, rows):
    api, raw_rate = rows["POST /divide (c1)"][0], rows["divide.apply_async() in a loop"][0]
    table(
        f"Enqueue, broker {broker}",
        ["what", "per second", "p50 ms", "p99 ms"],
        [(name, f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}") for name, (rate, p50, p99) in rows.items()],
    )
    ms = {name: 1000 / rate for name, (rate, _, _) in rows.items()}
    print(
        f"POST /divide against apply_async in a loop: {api / raw_rate:.2f}x (c1), "
        f"{rows['POST /divide (c20)'][0] / raw_rate:.2f}x (c20); the load generator's GET / rate is "
        f"{rows['GET / (c20)'][0] / rows['POST /divide (c20)'][0]:.0f}x the POST rate,"
        " so it is not what limits the POSTs."
    )
    print(
        f"Where a POST /divide's {ms['POST /divide (c1)']:.2f} ms go (c1): the request and its validation "
        f"{ms['validation only (c1)']:.2f} ms, the hop to the thread pool "
        f"{ms['validation, in the thread pool (c1)'] - ms['validation only (c1)']:.2f} ms,"
        " sending the task from that thread "
        f"{ms['POST /divide (c1)'] - ms['validation, in the thread pool (c1)']:.2f} ms "
        f"(from the event loop: {ms['divide.delay() on the event loop (c1)'] - ms['validation only (c1)']:.2f} ms; "
        f"in a plain loop: {ms['divide.apply_async() in a loop']:.2f} ms)."
    )
    cap = ms["divide.apply_async() in a loop"] / (ms["divide.apply_async() in a loop"] + ms["validation only (c1)"])
    print(
        f"With no thread at all, the request's own {ms['validation only (c1)']:.2f} ms"
        f" would still cap the ratio at {cap:.2f}x."
    )


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url:
        report("Redis", measure(chapter_env(redis_url)))
        with rabbitmq() as amqp:
            if amqp:
                report("RabbitMQ (results in Redis)", measure(chapter_env(redis_url, CELERY_BROKER_URL=amqp)))
            else:
                print("RabbitMQ: none at 127.0.0.1:5672 (or no rabbitmqctl to make a virtual host), so not measured")


if __name__ == "__main__":
    main()
