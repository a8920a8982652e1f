"""ch01_hello, in the order of its README: Hello World, a task run by a worker inside the web process, reload, Redis."""

import shutil

import httpx2
import pytest
from fastapi.testclient import TestClient

import processes
from helpers import CLEAN_ENV, import_chapter, no_request_gets_a_server_error
from processes import Terminals, free_port, wait_for

CHAPTER = "ch01_hello"


@pytest.fixture(scope="module")
def chapter_env(chapter_env):
    """No broker configured at all: chapter 1 must need no server."""
    return {k: v for k, v in chapter_env.items() if not k.startswith("CELERY_")}


@pytest.fixture(scope="module")
def client(main):
    with TestClient(main.app) as client:  # runs the lifespan: the worker thread starts and stops with the app
        yield client


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 1: Celery inside FastAPI", "version": "ch01_hello"}


def test_no_broker_is_configured(main):
    assert (main.celery.conf.broker_url, main.celery.conf.result_backend) == ("memory://localhost/", "cache+memory://")


def test_root_says_hello(client):
    assert client.get("/").json() == {"message": "Hello World"}


def test_add_defaults_to_two_and_two(client):
    assert client.get("/add").json() == {"2+2": 4}


def test_add_with_numbers(client):
    assert client.get("/add", params={"x": 3, "y": 4}).json() == {"3+4": 7}


def test_add_refuses_non_integers_with_fastapis_message(client):
    response = client.get("/add", params={"x": "a"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "int_parsing",
                "loc": ["query", "x"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "a",
            }
        ]
    }


def test_the_task_was_run_by_the_worker_not_inline(main, client):
    task = main.add.delay(5, 6)
    assert task.get(timeout=10, interval=0.01) == 11
    assert main.celery.conf.task_always_eager is False


def test_uvicorn_reload_restarts_the_worker_too(chapter, chapter_env, tmp_path):
    folder = shutil.copytree(chapter, tmp_path / CHAPTER, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    server = Terminals(folder, chapter_env).line("web", port=port)  # uvicorn main:app --reload
    try:
        assert httpx2.get(f"http://127.0.0.1:{port}/add?x=1&y=1").json() == {"1+1": 2}

        with open(folder / "tasks.py", "a") as tasks:
            tasks.write("\n# an edit, to make uvicorn reload\n")
        wait_for(lambda: server.output.count("Application startup complete") == 2, 20, "the reload")
        assert httpx2.get(f"http://127.0.0.1:{port}/add?x=2&y=3").json() == {"2+3": 5}
    finally:
        assert server.stop(timeout=15) == 0, server.output


def test_the_same_code_works_with_redis(chapter, redis_url):
    with import_chapter(chapter, processes.chapter_env(CLEAN_ENV, redis_url)) as main, TestClient(main.app) as client:
        assert main.celery.conf.broker_url == redis_url
        assert client.get("/add", params={"x": 20, "y": 22}).json() == {"20+22": 42}


def test_no_request_gets_a_server_error(api_schema):
    assert no_request_gets_a_server_error(api_schema)
