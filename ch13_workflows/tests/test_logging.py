"""The chapter's logging, on its real processes: the worker and the web app started as the README starts them, and
what each prints read line by line
(ch12_logging/README.md, "One configuration", "One id, from the request to the last retry").

A worker configures its logging only when it starts as `celery worker` does (the setup_logging signal): these
tests run the command, not a worker in this process.
"""

import json
import re
import socket
import uuid
from collections import Counter

import pytest
import requests
from fastapi.testclient import TestClient

from conftest import free_port, wait_for
from logs import redact
from main import app

WORKER = ("celery", "-A", "main.celery", "worker", "--loglevel=info", "--concurrency=1")


def start_stack(run, **settings):
    """The email service's stand-in (answering in 0.1 s), a worker (retrying after 1 s) and the web app, each as in
    a terminal of its own; the web app's address, the worker and the web app, once all three answer."""
    service, web = free_port(), free_port()
    stand_in = run("uvicorn", "third_party:app", "--port", str(service), THIRD_PARTY_DELAY="0.1")
    settings |= {"THIRD_PARTY_URL": f"http://127.0.0.1:{service}", "RETRY_COUNTDOWN": "1"}
    worker = run(*WORKER, **settings)
    served = run("uvicorn", "main:app", "--port", str(web), **settings)
    for process, line in ((stand_in, "Uvicorn running on"), (worker, " ready."), (served, "Uvicorn running on")):
        process.wait_for_line(line)
    return f"http://127.0.0.1:{web}", worker, served


def on_database(redis_url, number):
    """The Redis settings of a database of its own: no other worker of the run (the one in the test process, the
    other stack's) takes its tasks."""
    url = f"{redis_url.removesuffix('/0')}/{number}"
    return {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}


@pytest.fixture(scope="module")
def stack(run, redis_url):
    return start_stack(run, **on_database(redis_url, 1))


@pytest.fixture(scope="module")
def json_stack(run, redis_url):
    """A second stack, logging JSON."""
    return start_stack(run, LOG_FORMAT="json", **on_database(redis_url, 2))


def subscribed(web, request_id, email):
    """POST /users with X-Request-ID, and GET /users/{id} until its task has ended: the answer, and the user."""
    answer = requests.post(
        f"{web}/users", json={"email": email, "name": "Ann"}, headers={"X-Request-ID": request_id}, timeout=10
    )
    assert answer.status_code == 201, answer.text

    def ended():
        user = requests.get(f"{web}/users/{answer.json()['id']}", timeout=10).json()
        return user["task"]["state"] in ("SUCCESS", "FAILURE") and user

    return answer, wait_for(ended, 30, "the subscription to end")


def logged(process):
    """The lines a process logged: those that start as the chapter's text format does, or that are JSON."""
    return [line for line in process.lines if line.startswith(("[20", "{"))]


def test_a_password_in_a_url_and_an_email_address_are_masked():
    assert redact("Cannot connect to redis://:s3cret@redis:6379/0, amqp://celery:pw@rabbit//") == (
        "Cannot connect to redis://:**@redis:6379/0, amqp://celery:**@rabbit//"
    )
    assert redact("{'subscribed': 'ann+fail1@example.com'}") == "{'subscribed': 'a***@example.com'}"
    # A worker's name is no address, nor is a URL without a password
    for kept in [f"celery@{socket.gethostname()} ready.", "http://127.0.0.1:8010/subscribe"]:
        assert redact(kept) == kept


def test_the_answer_carries_the_callers_request_id_or_a_new_one():
    client = TestClient(app)
    assert client.get("/", headers={"X-Request-ID": "checkout-42"}).headers["X-Request-ID"] == "checkout-42"
    made = client.get("/", headers={"X-Request-ID": "not an id: it has spaces"}).headers["X-Request-ID"]
    assert str(uuid.UUID(made)) == made


def test_a_request_id_is_in_the_webs_line_and_the_workers_lines_of_its_task_and_its_retry(stack):
    web, worker, served = stack
    answer, user = subscribed(web, "signup-1", "ann+fail1@example.com")  # the service fails once: one retry
    task = f"tasks.subscribe_user[{user['task']['task_id']}]"
    assert (answer.headers["X-Request-ID"], user["task"]["state"], user["task"]["retries"]) == (
        "signup-1",
        "SUCCESS",
        1,
    )
    wait_for(lambda: f"{task} succeeded" in worker.output, 10, "the task's last line")
    webs = [line.split("] ", 1)[1] for line in logged(served) if "signup-1" in line]
    assert webs[0] == f"request=signup-1: Task {task} sent to celery"
    assert webs[1].startswith("request=signup-1: 127.0.0.1:") and webs[1].endswith(' - "POST /users HTTP/1.1" 201')
    workers = [line.split("] ", 1)[1] for line in logged(worker) if "signup-1" in line]
    assert workers.count(f"request=signup-1: Task {task} received") == 2  # the task, then its retry
    for message in ["calling the email service for user 1, try 1", "calling the email service for user 1, try 2"]:
        assert f"request=signup-1 {task}: {message}" in workers
    # Up to 1 s (RETRY_COUNTDOWN=1), drawn at random (retrying.py)
    assert any(
        re.match(rf"request=signup-1: Task {re.escape(task)} retry: Retry in [01]s: HTTPError\(", line)
        for line in workers
    )
    assert f"request=signup-1: Task {task} succeeded" in "\n".join(workers)
    assert "ann+fail1@example.com" not in worker.output + served.output  # a***@example.com


def test_json_lines_parse_with_the_request_and_the_task_as_fields(json_stack):
    web, worker, served = json_stack
    _, user = subscribed(web, "signup-json", "bob+fail1@example.com")
    task_id = user["task"]["task_id"]
    wait_for(lambda: f"{task_id}] succeeded" in worker.output, 10, "the task's last line")
    lines = [json.loads(line) for line in logged(worker) + logged(served)]
    assert {tuple(line) for line in lines} == {
        ("level", "logger", "process", "message", "request_id", "task_id", "task_name", "time")
    }
    story = [line for line in lines if line["request_id"] == "signup-json"]
    assert {line["logger"] for line in story} == {"request_id", "uvicorn.access", "tasks", "celery.app.trace"}
    in_task = [line for line in story if line["logger"] in ("tasks", "celery.app.trace")]
    assert {(line["task_name"], line["task_id"]) for line in in_task} == {("tasks.subscribe_user", task_id)}


def test_nothing_is_logged_twice_and_a_failure_once_with_its_traceback(stack):
    web, worker, served = stack
    answer = requests.post(f"{web}/subscribe", json={"email": "cid+down@example.com"}, timeout=10)  # fails each time
    task = f"tasks.subscribe[{answer.json()['task_id']}]"
    wait_for(lambda: f"{task} raised unexpected" in worker.output, 30, "the task's failure")
    request_id = answer.headers["X-Request-ID"]
    retries = [line.split("] ", 1)[1] for line in logged(worker) if f"{task} retry" in line]
    assert len(retries) == 3, retries
    for line in retries:
        assert re.match(rf"request={request_id}: Task {re.escape(task)} retry: Retry in \d+s: HTTPError\('503 ", line)
    assert worker.output.count("raised unexpected") == worker.output.count("Traceback (most recent call last)") == 1
    for process in (worker, served):
        assert [line for line, count in Counter(logged(process)).items() if count > 1] == []
