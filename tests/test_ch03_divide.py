"""ch03_divide, in the order of its README: the worker, the guide's shell session, Flower, the HTTP API, the diff."""

import httpx2
import pytest
from celery.result import AsyncResult
from fastapi.testclient import TestClient

from helpers import (
    bodies_over_64_kib_are_refused,
    no_request_gets_a_server_error,
    readme_has_current_diff,
    status_when_done,
)
from processes import wait_for
from scenarios import assert_redis_down_then_back

CHAPTER = "ch03_divide"


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 3: divide, run by a worker", "version": "ch03_divide"}


def test_tasks_travel_as_json_only(main):
    conf = main.celery.conf
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == ("json", "json", ["json"])


def test_divide_called_directly_runs_in_this_process(main, monkeypatch):
    monkeypatch.setattr("tasks.sleep", lambda seconds: None)
    assert main.divide(1, 2) == 0.5
    with pytest.raises(ZeroDivisionError):
        main.divide(1, 0)


def test_worker_starts_and_lists_the_task(worker):
    assert "[tasks]\n  . tasks.divide\n" in worker.output
    assert "Deprecat" not in worker.output


def test_divide_goes_from_pending_to_success(main, worker):
    task = main.divide.delay(1, 2)
    assert str(type(task)) == "<class 'celery.result.AsyncResult'>"
    assert (task.state, task.result) == ("PENDING", None)  # the task sleeps five seconds
    wait_for(task.ready, 15, "divide(1, 2)")
    assert (task.state, task.result) == ("SUCCESS", 0.5)


def test_divide_by_zero_fails_and_the_id_finds_it_again(main, worker):
    task = main.divide.delay(1, 0)
    wait_for(task.ready, 15, "divide(1, 0)")
    assert task.state == "FAILURE"
    assert repr(task.result) == "ZeroDivisionError('division by zero')"

    again = AsyncResult(task.id)  # as the guide types it: no app given, the current one is used
    assert (again.state, repr(again.result)) == ("FAILURE", "ZeroDivisionError('division by zero')")


def test_flower_lists_the_tasks(main, flower):
    def worker_sends_events():  # Flower turns events on in running workers; a task sent before that is not seen
        return 'flower_worker_online{worker="' in httpx2.get(f"{flower}/metrics", timeout=2).text

    wait_for(worker_sends_events, 30, "the worker's events in Flower")
    ok, failed = main.divide.delay(1, 3), main.divide.delay(1, 0)

    def listed():
        tasks = httpx2.get(f"{flower}/api/tasks", timeout=2).json()
        return {tid: tasks[tid]["state"] for tid in (ok.id, failed.id) if tid in tasks}

    wait_for(lambda: listed() == {ok.id: "SUCCESS", failed.id: "FAILURE"}, 20, "both tasks finished in Flower")
    assert (
        httpx2.get(f"{flower}/api/task/info/{failed.id}", timeout=2).json()["exception"]
        == "ZeroDivisionError('division by zero')"
    )


@pytest.fixture(scope="module")
def client(main):
    with TestClient(main.app) as client:
        yield client


def test_root_says_hello(client):
    assert client.get("/").json() == {"message": "Hello World"}


def test_divide_over_http(client, worker):
    response = client.post("/divide", json={"x": 1, "y": 2})
    task_id = response.json()["task_id"]
    assert response.json() == {"task_id": task_id}
    assert client.get(f"/tasks/{task_id}").json() == {
        "task_id": task_id,
        "state": "PENDING",
        "result": None,
        "error": None,
    }
    assert status_when_done(client, task_id) == {"task_id": task_id, "state": "SUCCESS", "result": 0.5, "error": None}


def test_divide_by_zero_over_http(client, worker):
    task_id = client.post("/divide", json={"x": 1, "y": 0}).json()["task_id"]
    assert status_when_done(client, task_id) == {
        "task_id": task_id,
        "state": "FAILURE",
        "result": None,
        "error": "ZeroDivisionError: float division by zero",
    }


def test_non_numbers_are_refused_with_fastapis_message(client):
    response = client.post("/divide", json={"x": "one", "y": 2})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"type": "float_type", "loc": ["body", "x"], "msg": "Input should be a valid number", "input": "one"},
        ]
    }


@pytest.mark.parametrize(("body", "x"), [({"x": "5", "y": 1}, "5"), ({"x": True, "y": 1}, True)])
def test_numbers_only(client, body, x):
    response = client.post("/divide", json=body)
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {"type": "float_type", "loc": ["body", "x"], "msg": "Input should be a valid number", "input": x},
            ]
        },
    )


@pytest.mark.parametrize(
    ("text", "shown"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "Infinity")]
)
def test_json_numbers_that_are_not_finite_get_a_422_too(client, text, shown):
    response = client.post("/divide", content=f'{{"x": {text}, "y": 1}}', headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "finite_number",
                    "loc": ["body", "x"],
                    "msg": "Input should be a finite number",
                    "input": shown,
                },
            ]
        },
    )


def test_a_quotient_too_large_for_a_float_fails_clearly(client, worker):
    task_id = client.post("/divide", json={"x": 1e308, "y": 1e-308}).json()["task_id"]
    assert status_when_done(client, task_id) == {
        "task_id": task_id,
        "state": "FAILURE",
        "result": None,
        "error": "OverflowError: 1e+308 / 1e-308 is too large for a float",
    }


def test_a_body_over_64_kib_is_refused(client):
    assert bodies_over_64_kib_are_refused(client)


def test_an_unknown_task_id_reads_pending(client):
    assert client.get("/tasks/no-such-task").json() == {
        "task_id": "no-such-task",
        "state": "PENDING",
        "result": None,
        "error": None,
    }


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_no_request_gets_a_server_error(api_schema):
    assert no_request_gets_a_server_error(api_schema)


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)
