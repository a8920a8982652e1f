"""ch04_factory, in the order of its README: the factory, FASTAPI_CONFIG, the testing flow, the worker, and the diff."""

from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from fastapi.testclient import TestClient

from helpers import (
    bodies_over_64_kib_are_refused,
    import_chapter,
    no_request_gets_a_server_error,
    readme_has_current_diff,
    run_all,
    status_when_done,
)
from processes import wait_for
from scenarios import assert_redis_down_then_back

CHAPTER = "ch04_factory"


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 4: an application factory", "version": "ch04_factory"}


def test_the_app_carries_its_celery_app_the_default_one_shared_tasks_run_on(chapter, chapter_env):
    with import_chapter(chapter, chapter_env) as main:
        assert main.celery is main.app.state.celery
        assert main.divide.app is main.celery and main.divide.name == "tasks.divide"
        # in a request's thread too: FastAPI runs a plain def in a thread pool
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(lambda: main.divide.app).result() is main.celery


def test_each_create_app_call_builds_a_new_app(main):
    first, second = main.create_app(), main.create_app()
    assert first is not second
    assert first.router is not second.router and first.state.settings is not second.state.settings
    assert first.state.celery is not second.state.celery and main.divide.app is second.state.celery
    first.add_api_route("/only-here", lambda: {"here": True})
    assert TestClient(first).get("/only-here").json() == {"here": True}
    assert TestClient(second).get("/only-here").status_code == 404
    assert TestClient(second).get("/").json() == {"message": "Hello World"}


@pytest.mark.parametrize(
    ("name", "config", "debug", "eager"),
    [
        ("development", "DevelopmentConfig", True, False),
        ("production", "ProductionConfig", False, False),
        ("testing", "TestingConfig", False, True),
    ],
)
def test_fastapi_config_picks_the_settings(chapter, chapter_env, name, config, debug, eager):
    with import_chapter(chapter, chapter_env | {"FASTAPI_CONFIG": name}) as main:
        assert (type(main.app.state.settings).__name__, main.app.debug) == (config, debug)
        assert main.celery.conf.task_always_eager is eager
        assert main.celery.conf.deprecated_settings == set()


def test_development_is_the_default(main):
    assert type(main.app.state.settings).__name__ == "DevelopmentConfig"


def test_an_unknown_fastapi_config_is_a_clear_error(chapter, chapter_env):
    with pytest.raises(ValueError, match="^FASTAPI_CONFIG='staging': use one of development, production, testing$"):
        with import_chapter(chapter, chapter_env | {"FASTAPI_CONFIG": "staging"}):
            pass


@pytest.fixture
def testing_client(chapter, chapter_env, monkeypatch):
    """FASTAPI_CONFIG=testing with no broker or Redis anywhere in the environment."""
    env = {k: v for k, v in chapter_env.items() if not k.startswith("CELERY_")} | {"FASTAPI_CONFIG": "testing"}
    with import_chapter(chapter, env) as main:
        monkeypatch.setattr("tasks.sleep", lambda seconds: None)  # eager tasks run inside the request
        yield TestClient(main.app)


def test_testing_runs_the_whole_flow_with_no_server(testing_client):
    task_id = testing_client.post("/divide", json={"x": 1, "y": 2}).json()["task_id"]
    assert testing_client.get(f"/tasks/{task_id}").json() == {
        "task_id": task_id,
        "state": "SUCCESS",
        "result": 0.5,
        "error": None,
    }


def test_testing_keeps_failures_too(testing_client):
    task_id = testing_client.post("/divide", json={"x": 1, "y": 0}).json()["task_id"]
    assert testing_client.get(f"/tasks/{task_id}").json() == {
        "task_id": task_id,
        "state": "FAILURE",
        "result": None,
        "error": "ZeroDivisionError: float division by zero",
    }


def test_testing_shows_bad_input_and_overflow(testing_client):
    response = testing_client.post(
        "/divide", content='{"x": NaN, "y": true}', headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "finite_number",
                    "loc": ["body", "x"],
                    "msg": "Input should be a finite number",
                    "input": "NaN",
                },
                {"type": "float_type", "loc": ["body", "y"], "msg": "Input should be a valid number", "input": True},
            ]
        },
    )
    task_id = testing_client.post("/divide", json={"x": 1e308, "y": 1e-308}).json()["task_id"]
    assert (
        testing_client.get(f"/tasks/{task_id}").json()["error"]
        == "OverflowError: 1e+308 / 1e-308 is too large for a float"
    )


def test_the_worker_starts_without_deprecation_warnings(worker):
    assert "[tasks]\n  . tasks.divide\n" in worker.output
    assert "Deprecat" not in worker.output


def test_the_shell_session_of_chapter_3_still_works(main, worker):
    task = main.divide.delay(1, 2)
    assert (task.state, task.result) == ("PENDING", None)
    wait_for(task.ready, 15, "divide(1, 2)")
    assert (task.state, task.result) == ("SUCCESS", 0.5)


@pytest.fixture(scope="module")
def client(main):
    with TestClient(main.app) as client:
        yield client


def test_development_sends_tasks_to_the_worker(client, worker):
    ok = client.post("/divide", json={"x": 1, "y": 2}).json()["task_id"]
    failing = client.post("/divide", json={"x": 1, "y": 0}).json()["task_id"]
    assert client.get(f"/tasks/{ok}").json()["state"] == "PENDING"
    assert status_when_done(client, ok) == {"task_id": ok, "state": "SUCCESS", "result": 0.5, "error": None}
    assert status_when_done(client, failing) == {
        "task_id": failing,
        "state": "FAILURE",
        "result": None,
        "error": "ZeroDivisionError: float division by zero",
    }
    assert f"Task tasks.divide[{ok}] succeeded" in worker.output


def test_a_body_over_64_kib_is_refused(client):
    assert bodies_over_64_kib_are_refused(client)


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_run_all_runs_the_chapter(stack, redis_url):
    ch04 = stack("4", REDIS_URL=redis_url)
    ch04.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert httpx2.get(f"{ch04.web}/").json() == {"message": "Hello World"}
    assert ch04.ctrl_c() == 130


def test_run_all_shell_imports_the_factory(redis_url):
    result = run_all(
        "shell", "ch04_factory", env={"REDIS_URL": redis_url}, input="print(type(app.state.settings).__name__)\n"
    )
    assert "Names: " in result.stdout and " create_app, " in result.stdout and " divide, " in result.stdout
    assert "DevelopmentConfig" in result.stdout


def test_no_request_gets_a_server_error(api_schema):
    assert no_request_gets_a_server_error(api_schema)


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)
