"""Scenarios two chapters share: Redis away, then back, with the chapter's own processes around it."""

import json
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from helpers import find_redis_server, import_chapter, on_redis
from processes import RedisServer, Terminals, free_port, wait_for


def assert_redis_down_then_back(chapter, env, requests=50):
    """With no Redis, concurrent requests all get a 503 saying so; once Redis is back, the same app serves again."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with import_chapter(chapter, {**env, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}) as main:
        client = TestClient(main.app)
        with ThreadPoolExecutor(requests) as pool:
            responses = list(pool.map(lambda _: client.post("/divide", json={"x": 1, "y": 2}), range(requests)))
        responses.append(client.get("/tasks/no-such-task"))
        expected = {"detail": f"Redis is unreachable: Error 111 connecting to 127.0.0.1:{port}. Connection refused."}
        assert {(r.status_code, r.text) for r in responses} == {(503, json.dumps(expected, separators=(",", ":")))}

        server = RedisServer(find_redis_server(), port)
        try:
            assert client.post("/divide", json={"x": 1, "y": 2}).status_code == 200
            assert client.get("/tasks/no-such-task").json()["state"] == "PENDING"
        finally:
            server.stop()


def assert_redis_away_holds_nothing_back(chapter, env, restartable_redis, emails):
    """Redis stops while the service is being called for emails[0], which fails once: its retry waits for Redis,
    the same worker runs it, and the other tasks, queued meanwhile, are not held back by a minute."""
    env = on_redis(env, restartable_redis.url, THIRD_PARTY_DELAY="1")
    terminals = Terminals(chapter, env)
    try:
        terminals.line("third_party")
        worker = terminals.line("worker")
        with import_chapter(chapter, env) as main:
            task_ids = [main.subscribe.delay(email).id for email in emails]
            worker.wait_for_output(f"Task tasks.subscribe[{task_ids[0]}] received", timeout=10)
            if main.celery.conf.task_track_started:  # chapter 6 stores STARTED before the call: let it
                wait_for(lambda: main.celery.AsyncResult(task_ids[0]).state == "STARTED", 10, "STARTED")
            restartable_redis.stop()  # while the service takes its second to fail
            wait_for(
                lambda: worker.output.count("sending again in 2 s") >= 2, 30, "3 s of tries"
            )  # Celery's own: 0.6 s
            restartable_redis.start()

            def states():
                return [main.celery.AsyncResult(task_id).state for task_id in task_ids]

            try:
                wait_for(
                    lambda: set(states()) == {"SUCCESS"},
                    45,
                    "every task, within the minute a task held by a worker would wait (visibility_timeout)",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {states()}; the worker:\n{worker.output[-4000:]}") from None
        assert worker.proc.poll() is None, worker.output  # the very worker that held the task through the outage
        assert f"Task tasks.subscribe[{task_ids[0]}] retry: Retry in " in worker.output
    finally:
        terminals.stop()
