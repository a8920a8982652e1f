"""b. non-blocking: how fast the API answers while work goes on, with Celery and with the work done inside requests.

Run: ./run_all.sh bench responsive. Chapter 5's app, its stand-in answering after 1 s, one worker: GET / (async) and
GET /tasks/{id} (a plain def, in the thread pool, reading Redis) are timed while other clients keep the app busy.
"""

from common import (
    ROOT,
    SHORT,
    chapter_env,
    free_port,
    machine,
    post_at_rate,
    redis_server,
    stand_in,
    table,
    web,
    worker,
    wrk,
)

CHAPTER = ROOT / "ch05_retry"
SECONDS = 2 if SHORT else 5
BODY = '{"email": "ann@example.com"}'
RATE = 50  # POSTs a second, from users who do not wait for each other
LOADS = {  # what other users do meanwhile
    "nothing": None,
    f"{RATE} POST/s to /subscribe (Celery)": "/subscribe",
    f"{RATE} POST/s, the call inside a def view": "/subscribe_in_request",
    f"{RATE} POST/s, the call inside an async def view": "/subscribe_in_request_async",
}


def main():
    print(f"Machine: {machine()}")
    with redis_server() as redis_url:
        env = chapter_env(redis_url, THIRD_PARTY_URL=f"http://127.0.0.1:{free_port()}", THIRD_PARTY_DELAY="1")
        with stand_in(CHAPTER, env), web(CHAPTER, env, "responsive_app:app") as url, worker(CHAPTER, env):
            rows = {}
            for name, path in LOADS.items():
                stop = post_at_rate(url + path, BODY, RATE, 2 * SECONDS) if path else (lambda: None)
                root, status = wrk(f"{url}/", 1, SECONDS), wrk(f"{url}/tasks/some-task-id", 1, SECONDS)
                answered = stop()
                rows[name] = (root, status, "" if answered is None else f"{answered / (2 * SECONDS):.0f}")
    table(
        f"The API's answers while other users keep it busy: latency in ms, p50 / p99 (answered in {SECONDS} s)",
        ["meanwhile", "GET / (async def)", "GET /tasks/{id} (def)", "their POSTs answered/s"],
        [(name, cell(r), cell(s), posts) for name, (r, s, posts) in rows.items()],
    )
    celery, inside_def, inside_async = (rows[name] for name in list(LOADS)[1:])
    print(
        f"GET /tasks p99 with the call inside a def view: {ratio(inside_def[1], celery[1])} Celery's;"
        " GET / p99 with it "
        f"inside an async def view: {ratio(inside_async[0], celery[0])} Celery's."
    )


def cell(measured):
    rate, p50, p99 = measured
    return f"none in {SECONDS} s" if rate == 0 else f"{number(p50)} / {number(p99)} ({rate * SECONDS:,.0f})"


def number(ms):
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def ratio(slow, fast):
    return f"more than {SECONDS * 1000 / fast[2]:,.0f}x" if slow[0] == 0 else f"{slow[2] / fast[2]:,.0f}x"


if __name__ == "__main__":
    main()
