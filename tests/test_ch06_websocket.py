"""ch06_websocket, in the order of its README: the messages a WebSocket client gets, many clients, a client that
leaves, the page, what chapter 5 had, and the diff.

Real clients (the websockets package and Chromium) talk to the reader's `uvicorn main:app`; the stand-in answers
in 0.1 s here, so that a hundred tasks take seconds.
"""

import asyncio
import json
import resource
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import redis
import websockets
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from websockets.sync.client import connect

from helpers import (
    ROOT,
    address,
    import_chapter,
    no_request_gets_a_server_error,
    readme_has_current_diff,
    unavailable,
)
from limits import longest_hold
from outage import ByHand
from processes import Terminals, free_port, wait_for
from scenarios import assert_redis_away_holds_nothing_back, assert_redis_down_then_back

CHAPTER = "ch06_websocket"


@pytest.fixture(scope="module")
def chapter_env(chapter_env):
    return chapter_env | {"THIRD_PARTY_DELAY": "0.1"}


def start(web, path, body):
    return httpx2.post(f"{web}{path}", json=body).json()["task_id"]


def socket_url(web, task_id):
    return f"ws{web.removeprefix('http')}/ws/task_status/{task_id}"


def until_closed(socket, timeout):
    """Every message left on the socket, until the server closes it."""
    received = []
    try:
        while True:
            received.append(json.loads(socket.recv(timeout)))
    except websockets.ConnectionClosedOK:
        return received


def messages(web, task_id, timeout=30):
    """Every message the WebSocket of a task sends, until the server closes it; and how it closed."""
    with connect(socket_url(web, task_id), open_timeout=10) as socket:
        return until_closed(socket, timeout), socket.close_code


def run_async(coroutine):
    """asyncio.run() in a thread of its own: once a browser test ran, Playwright keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 6: WebSockets", "version": "ch06_websocket"}


def test_a_client_gets_success_then_the_server_closes(web, worker, third_party):
    email = address()
    task_id = start(web, "/subscribe", {"email": email})
    received, code = messages(web, task_id)
    assert received[-1] == {
        "task_id": task_id,
        "state": "SUCCESS",
        "retries": 0,
        "result": {"subscribed": email},
        "error": None,
    }
    assert [message["state"] for message in received][-2:] == ["STARTED", "SUCCESS"]
    assert code == 1000


def test_a_client_gets_failure_then_the_server_closes(web, worker, third_party, chapter_env):
    task_id = start(web, "/subscribe", {"email": address("+down")})
    received, code = messages(web, task_id)
    assert received[-1] == {
        "task_id": task_id,
        "state": "FAILURE",
        "retries": 3,
        "result": None,
        "error": unavailable(chapter_env),
    }
    assert code == 1000


def test_a_client_that_comes_after_the_end_gets_the_final_state(web, worker, third_party):
    email = address()
    task_id = start(web, "/subscribe", {"email": email})
    wait_for(lambda: httpx2.get(f"{web}/tasks/{task_id}").json()["state"] == "SUCCESS", 15, "the task to end")
    assert messages(web, task_id) == (
        [{"task_id": task_id, "state": "SUCCESS", "retries": 0, "result": {"subscribed": email}, "error": None}],
        1000,
    )


def listening_first(web, send):
    """The messages of a client that connects before the task is sent (send(task_id) sends it)."""
    task_id = str(uuid.uuid4())
    with connect(socket_url(web, task_id)) as socket:
        first = json.loads(socket.recv(10))
        send(task_id)
        return [first, *until_closed(socket, 15)]


def test_a_client_that_comes_first_gets_every_state_in_order(main, web, worker, third_party, chapter_env):
    email = address("+fail2")
    received = listening_first(web, lambda task_id: main.subscribe.apply_async([email], task_id=task_id))
    error = unavailable(chapter_env)
    assert [(m["state"], m["retries"], m["error"]) for m in received] == [
        ("PENDING", 0, None),
        ("STARTED", 0, None),
        ("RETRY", 1, error),
        ("STARTED", 1, None),
        ("RETRY", 2, error),
        ("STARTED", 2, None),
        ("SUCCESS", 2, None),
    ]
    assert received[-1]["result"] == {"subscribed": email}


def test_a_list_import_reports_its_progress(main, web, worker, third_party, chapter_env):
    emails = [address(), address("+down"), address(), address()]
    received = listening_first(web, lambda task_id: main.import_list.apply_async([emails], task_id=task_id))
    assert [(m["state"], m["result"]) for m in received] == [("PENDING", None), ("STARTED", None)] + [
        ("PROGRESS", {"done": done, "total": 4}) for done in range(1, 5)
    ] + [
        (
            "SUCCESS",
            {"subscribed": 3, "failed": [f"{emails[1]}: {unavailable(chapter_env).removeprefix('HTTPError: ')}"]},
        )
    ]


def test_get_shows_the_same_json_started_included(web, worker):
    # divide takes 5 s: STARTED lasts long enough to be asked for, then to be the socket's first message
    task_id = start(web, "/divide", {"x": 1, "y": 4})
    assert wait_for(lambda: httpx2.get(f"{web}/tasks/{task_id}").json()["state"] == "STARTED", 15, "STARTED")
    started = httpx2.get(f"{web}/tasks/{task_id}").json()
    received, _ = messages(web, task_id)
    assert (received[0], received[-1]) == (started, httpx2.get(f"{web}/tasks/{task_id}").json())


def test_a_hundred_clients_on_a_hundred_tasks_get_their_own_final_message(web, worker, third_party):
    emails = [address() for _ in range(100)]
    task_ids = [start(web, "/subscribe", {"email": email}) for email in emails]

    async def listen(task_id):
        async with websockets.connect(socket_url(web, task_id)) as socket:
            return [json.loads(message) async for message in socket], socket.close_code

    async def everyone():
        return await asyncio.wait_for(asyncio.gather(*(listen(task_id) for task_id in task_ids)), 90)

    for task_id, email, (received, code) in zip(task_ids, emails, run_async(everyone()), strict=True):
        assert {message["task_id"] for message in received} == {task_id}
        assert [message["state"] for message in received].count("SUCCESS") == 1
        assert (received[-1]["result"], code) == ({"subscribed": email}, 1000)


def test_several_clients_on_one_task_all_get_it(web, worker, third_party):
    task_id = start(web, "/subscribe", {"email": address("+fail1")})

    async def listen():
        async with websockets.connect(socket_url(web, task_id)) as socket:
            return [json.loads(message) async for message in socket][-1]

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(listen() for _ in range(10))), 30)

    finals = run_async(together())
    assert len(finals) == 10 and all(final == finals[0] for final in finals) and finals[0]["state"] == "SUCCESS"


def test_clients_that_close_first_are_no_error(web, worker, third_party, redis_url):
    task_ids = [start(web, "/subscribe", {"email": address()}) for _ in range(20)]

    async def close_at_the_end(task_id):  # the client closes the socket as soon as it has the final state
        async with websockets.connect(socket_url(web, task_id)) as socket:
            async for message in socket:
                if json.loads(message)["state"] == "SUCCESS":
                    return

    async def together():
        await asyncio.wait_for(asyncio.gather(*(close_at_the_end(task_id) for task_id in task_ids)), 30)

    run_async(together())
    server = redis.Redis.from_url(redis_url)
    wait_for(
        lambda: all(n == 0 for _, n in server.pubsub_numsub(*(f"celery-task-meta-{t}" for t in task_ids))),
        10,
        "no subscriber",
    )
    assert "Exception in ASGI application" not in web.process.output


def test_a_client_that_leaves_early_leaves_no_subscription(web, redis_url):
    server = redis.Redis.from_url(redis_url)
    channel = f"celery-task-meta-{uuid.uuid4()}"

    def subscribers():
        return server.pubsub_numsub(channel)[0][1]

    def subscribed_connections():
        return sum(1 for client in server.client_list() if client["sub"] != "0")

    before = subscribed_connections()
    with connect(socket_url(web, channel.removeprefix("celery-task-meta-"))) as socket:
        assert json.loads(socket.recv(10))["state"] == "PENDING"
        wait_for(lambda: subscribers() == 1, 10, "the subscription")
    wait_for(lambda: subscribers() == 0 and subscribed_connections() == before, 10, "the subscription to go")


def test_bad_input_is_refused_with_fastapis_message(web):
    too_many = httpx2.post(f"{web}/import", json={"emails": [address() for _ in range(11)]})
    assert (too_many.status_code, too_many.json()["detail"][0]["msg"]) == (
        422,
        "List should have at most 10 items after validation, not 11",
    )
    not_one = httpx2.post(f"{web}/import", json={"emails": ["not-an-address"]})
    assert (
        not_one.json()["detail"][0]["msg"]
        == "value is not a valid email address: An email address must have an @-sign."
    )


def test_the_page_listens_and_makes_no_request_after_the_post(page, web, worker, third_party):
    requested = []
    page.on("request", lambda request: requested.append(f"{request.method} {request.url}"))
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(f"{web}/form_ws")
    states, bar, notice = page.locator("#states"), page.locator("#progress"), page.locator("#notice")

    emails = [address() for _ in range(9)] + [address("+down")]
    page.fill("textarea", "\n".join(emails))
    requested.clear()
    page.click("#list button")
    expect(states).to_contain_text("PROGRESS", timeout=15_000)
    expect(bar).to_be_visible()
    # a list with a failure is a success in part, not shown as a plain SUCCESS
    expect(states.locator("li.partial")).to_contain_text(
        f"SUCCESS, in part: 9 subscribed, 1 failed: {emails[-1]}: 503 Server Error", timeout=15_000
    )
    expect(page.locator("#done")).to_have_text("10 of 10")
    expect(notice).to_have_text("Final state received; the socket is closed (1000).")
    assert bar.evaluate("bar => [bar.value, bar.max]") == [10, 10]
    assert requested == [f"POST {web}/import"]
    assert (page.text_content("#requests"), page.text_content("#sockets")) == ("1", "1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # the task id and the socket's close are not states; each state has its time since the POST
    assert all(text.startswith("+") and "task " not in text for text in states.locator("li").all_text_contents())

    page.fill("input[name=email]", address("+fail2"))
    page.click("#one button")
    for text in ("STARTED", "RETRY 1: HTTPError: 503", "RETRY 2: HTTPError: 503", "SUCCESS (retries: 2)"):
        expect(states).to_contain_text(text, timeout=15_000)
    expect(notice).to_contain_text("(1000)")
    assert requested == [f"POST {web}/import", f"POST {web}/subscribe"]


def test_the_page_reconnects_after_redis_comes_back(page, chapter, chapter_env, restartable_redis):
    stack = ByHand(chapter, chapter_env | {"THIRD_PARTY_DELAY": "1"}, restartable_redis.url)
    states, notice = page.locator("#states"), page.locator("#notice")
    try:
        page.goto(f"{stack.url}/form_ws")
        page.fill("input[name=email]", address("+fail1"))
        page.click("#one button")
        expect(states).to_contain_text("STARTED", timeout=10_000)
        restartable_redis.stop()
        expect(notice).to_contain_text("Socket closed (1011: Redis is unreachable", timeout=10_000)
        expect(notice).to_contain_text("the server lost Redis. Connecting again in")
        restartable_redis.start()
        expect(states).to_contain_text("SUCCESS (retries: 1)", timeout=30_000)
        expect(notice).to_contain_text("(1000)")
        shown = [text.split(" s", 1)[1].strip() for text in states.locator("li").all_text_contents()]
        # no state shown twice in a row across the sockets
        assert all(one != two for one, two in zip(shown, shown[1:], strict=False)), shown
        assert int(page.text_content("#sockets")) >= 2 and page.text_content("#requests") == "1"
    finally:
        stack.stop()


def test_chapter_5s_page_and_api_still_work(web, worker, third_party):
    assert "One GET a second" in httpx2.get(f"{web}/form").text  # the polling page, to compare
    task_id = start(web, "/divide", {"x": 1, "y": 4})
    assert messages(web, task_id, timeout=15)[0][-1]["result"] == 0.25


def start_web(chapter_env, redis_url, open_files=None):
    """The reader's `uvicorn main:app` on Redis at redis_url, under `ulimit -n open_files` if given; its URL."""
    env = chapter_env | {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    limit = open_files and (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    process = Terminals(ROOT / CHAPTER, env).line("web", port=free_port(), preexec_fn=limit)
    return process.url, process


def closed_with(url):
    """The close code and reason of a socket that the server closes before any message."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        with connect(url, open_timeout=10) as socket:
            socket.recv(10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def pushed(url, server, task_id):
    """The message a socket gets when the worker's backend stores SUCCESS for task_id meanwhile."""
    key = f"celery-task-meta-{task_id}"
    meta = json.dumps({"status": "SUCCESS", "result": 1, "task_id": task_id, "retries": 0})
    with connect(socket_url(url, task_id), open_timeout=10) as socket:
        first = json.loads(socket.recv(10))
        server.set(key, meta)
        server.publish(key, meta)
        return [first, *until_closed(socket, 10)]


def test_redis_away_closes_the_sockets_saying_so_and_back_they_work(chapter_env, restartable_redis):
    web, process = start_web(chapter_env, restartable_redis.url)
    server = redis.Redis.from_url(restartable_redis.url)
    try:
        assert [m["state"] for m in pushed(web, server, str(uuid.uuid4()))] == ["PENDING", "SUCCESS"]
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            with connect(socket_url(web, "any")) as socket:
                assert json.loads(socket.recv(10))["state"] == "PENDING"
                restartable_redis.stop()  # Redis goes away while the socket is open
                socket.recv(10)
        unreachable = (
            1011,
            f"Redis is unreachable: Error 111 connecting to 127.0.0.1:{restartable_redis.port}. Connection refused.",
        )
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == unreachable
        # and a socket opened meanwhile
        assert closed_with(socket_url(web, "any")) == unreachable
        restartable_redis.start()
        # the shared subscriber connects again by itself, within its back-off of at most 5 s
        wait_for(
            lambda: pushed(web, server, str(uuid.uuid4()))[-1]["state"] == "SUCCESS", 15, "a push after Redis came back"
        )
        assert "Exception in ASGI application" not in process.output
    finally:
        process.stop()


def test_the_first_socket_once_redis_is_back_gets_its_state(chapter_env, restartable_redis):
    """Redis restarted: the first socket opened once it answers gets its state, not the error of a pooled
    connection Redis closed, nor the subscriber's error from before Redis came back (issue #22)."""
    web, process = start_web(chapter_env, restartable_redis.url)
    server = redis.Redis.from_url(restartable_redis.url)
    try:
        assert [m["state"] for m in pushed(web, server, str(uuid.uuid4()))] == ["PENDING", "SUCCESS"]
        restartable_redis.stop()
        assert closed_with(socket_url(web, "any"))[0] == 1011  # the subscriber has seen Redis go
        restartable_redis.start()
        assert [m["state"] for m in pushed(web, server, str(uuid.uuid4()))] == ["PENDING", "SUCCESS"]
        assert [m["state"] for m in pushed(web, server, str(uuid.uuid4()))] == ["PENDING", "SUCCESS"]
        assert "Exception in ASGI application" not in process.output
    finally:
        process.stop()


def test_past_what_the_process_can_hold_new_sockets_are_refused_and_the_api_answers(chapter_env, redis_url):
    # ulimit -n 300: the app keeps 100 descriptors for itself, so it holds 200 sockets
    web, process = start_web(chapter_env, redis_url, open_files=300)
    server = redis.Redis.from_url(redis_url)
    before = len(server.client_list())

    async def hold():
        sockets = [await websockets.connect(socket_url(web, str(uuid.uuid4()))) for _ in range(200)]
        firsts = [json.loads(await socket.recv()) for socket in sockets]
        refused = await websockets.connect(socket_url(web, "one-more"))
        try:
            await refused.recv()
        except websockets.ConnectionClosed:
            pass
        answer = await asyncio.to_thread(httpx2.get, f"{web}/")
        connections = len(server.client_list()) - before
        for held in sockets:
            await held.close()
        return {m["state"] for m in firsts}, (refused.close_code, refused.close_reason), answer.status_code, connections

    try:
        states, refused, answer, connections = run_async(hold())
        assert states == {"PENDING"}
        assert refused == (1013, "this server holds 200 sockets: try later")
        assert answer == 200
        assert connections <= 3  # one subscriber, and the few that read the stored states
        assert "Too many open files" not in process.output
    finally:
        process.stop()


def test_a_client_too_far_behind_is_closed_and_the_others_are_not_delayed(web, redis_url):
    server = redis.Redis.from_url(redis_url)
    task_id = str(uuid.uuid4())
    key = f"celery-task-meta-{task_id}"
    big = json.dumps({"status": "PROGRESS", "result": {"padding": "x" * 50_000}, "task_id": task_id})
    # A client that opens the socket by hand and then reads nothing: what the server sends piles up
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", int(web.rsplit(":", 1)[1])))
    stuck.sendall(
        f"GET /ws/task_status/{task_id} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    with stuck, connect(socket_url(web, task_id)) as other:
        assert json.loads(other.recv(10))["state"] == "PENDING"
        # Each state read by the other client before the next is published: it never falls behind (a burst of states
        # published faster than the server can send 50 kB frames would leave any client behind), the stuck one does
        for n in range(400):
            server.publish(key, big.replace('"padding"', f'"n": {n}, "padding"'))
            assert json.loads(other.recv(10))["result"]["n"] == n
        stuck.settimeout(15)
        received = b"".join(iter(lambda: stuck.recv(2**20), b""))
    reason = b"too far behind: 100 states unsent"
    assert received.endswith(b"\x88" + bytes([2 + len(reason)]) + (4000).to_bytes(2, "big") + reason)


def test_no_task_outlives_the_visibility_timeout(chapter, chapter_env):
    run, countdown, visibility_timeout = longest_hold(chapter, chapter_env)
    assert (run, countdown, visibility_timeout) == (35, 5, 60)
    assert run + countdown < visibility_timeout


def test_an_import_against_a_slow_service_is_received_once_and_calls_each_address_once(start, chapter_env):
    service_url = f"http://127.0.0.1:{free_port()}"
    env = {"THIRD_PARTY_URL": service_url, "THIRD_PARTY_DELAY": "7"}
    service = start("uvicorn", "third_party:app", "--port", service_url.rsplit(":", 1)[1], env=env)
    slow_worker = start(
        "celery", "-A", "main.celery", "worker", "--loglevel=info", "-n", "slow@%h", "-Q", "slow", env=env
    )
    slow_worker.wait_for_output(" ready.", timeout=30)
    emails = [address() for _ in range(10)]
    with import_chapter(ROOT / CHAPTER, chapter_env | env) as main:
        task = main.import_list.apply_async([emails], queue="slow")
        assert task.get(timeout=30) == {"subscribed": 10, "failed": []}
    assert slow_worker.output.count(f"Task tasks.import_list[{task.id}] received") == 1
    assert sorted(line.split(",")[0] for line in service.output.splitlines() if ", call " in line) == sorted(emails)
    assert all(f"{email}, call 1: 200 subscribed" in service.output for email in emails)


def test_while_redis_is_away_a_retry_waits_and_no_task_is_held_back(chapter, chapter_env, restartable_redis):
    assert_redis_away_holds_nothing_back(
        chapter, chapter_env, restartable_redis, [address("+fail1")] + [address() for _ in range(5)]
    )


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_no_request_gets_a_server_error(api_schema):
    assert no_request_gets_a_server_error(api_schema)


def test_run_all_runs_the_chapter(stack, redis_url):
    ch06 = stack("6", REDIS_URL=redis_url)
    ch06.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert f"    page         {ch06.web}/form\n    page         {ch06.web}/form_ws\n" in ch06.process.output
    assert ch06.ctrl_c() == 130


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)
