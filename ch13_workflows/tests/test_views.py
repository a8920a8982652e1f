"""The views that send tasks, called with FastAPI's TestClient, with no broker: each task's delay() (or apply_async())
replaced for the test, so what is checked is what a view sends, and when; not what the task does.

ch10_testing/README.md, "The view that sends a task".
"""

from unittest.mock import Mock

from celery.result import AsyncResult
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from database import Session, get_session
from main import app
from models import User
from status import status_json
from tasks import divide, import_list, subscribe, subscribe_user


def test_the_app_is_chapter_13s(client):
    assert client.get("/").json() == {"message": "Hello World"}
    info = client.get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 13: workflows", "version": "ch13_workflows"}


def test_post_divide_sends_the_two_numbers(client, monkeypatch):
    delay = Mock(return_value=AsyncResult("the-task-id"))
    monkeypatch.setattr(divide, "delay", delay)
    assert client.post("/divide", json={"x": 1, "y": 2}).json() == {"task_id": "the-task-id"}
    delay.assert_called_once_with(1, 2)


def test_post_subscribe_and_post_import_send_the_addresses(client, monkeypatch):
    delays = {task: Mock(return_value=AsyncResult(task.name)) for task in (subscribe, import_list)}
    for task, delay in delays.items():
        monkeypatch.setattr(task, "delay", delay)
    assert client.post("/subscribe", json={"email": "ann@example.com"}).json() == {"task_id": "tasks.subscribe"}
    emails = ["ann@example.com", "bob@example.com"]
    assert client.post("/import", json={"emails": emails}).json() == {"task_id": "tasks.import_list"}
    delays[subscribe].assert_called_once_with("ann@example.com")
    delays[import_list].assert_called_once_with(emails)


def test_post_users_sends_the_task_once_the_user_is_committed(client, monkeypatch):
    """The replacement looks for the user as the worker would, in a session of its own, when the task is sent."""
    seen_by_the_worker = []

    def apply_async(args, task_id):
        with Session() as session:
            seen_by_the_worker.append(session.get(User, args[0]))
        return AsyncResult(task_id)

    sent = Mock(side_effect=apply_async)
    monkeypatch.setattr(subscribe_user, "apply_async", sent)
    created = client.post("/users", json={"email": "ann@example.com", "name": "Ann"})
    assert created.status_code == 201
    user_id, task_id = created.json()["id"], created.json()["task_id"]
    sent.assert_called_once_with([user_id], task_id=task_id)
    (user,) = seen_by_the_worker
    assert (user.email, user.task_id) == ("ann@example.com", task_id)


def test_bad_input_is_a_4xx_and_sends_nothing(client, monkeypatch):
    for task in (divide, subscribe):
        monkeypatch.setattr(task, "delay", Mock(side_effect=AssertionError("nothing is sent for bad input")))
    assert client.post("/divide", json={"x": "1", "y": 2}).status_code == 422  # a number, not a string
    assert client.post("/divide", content=b"\xff", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/subscribe", json={"email": "ann@example.test"}).status_code == 422  # a special-use domain
    padded = '{"email": "ann@example.com"' + " " * 65_536 + "}"
    response = client.post("/subscribe", content=padded, headers={"content-type": "application/json"})
    assert (response.status_code, response.text) == (413, "Content Too Large")


def test_a_taken_address_is_a_409_and_sends_nothing(client, user, monkeypatch):
    monkeypatch.setattr(subscribe_user, "apply_async", Mock(side_effect=AssertionError("nothing is sent")))
    taken = client.post("/users", json={"email": user.email, "name": "Ann again"})
    assert (taken.status_code, taken.json()) == (
        409,
        {"detail": "a user with the email ann@example.com exists already"},
    )


def test_a_database_that_cannot_be_opened_is_a_503(client):
    """app.dependency_overrides: the views' session comes from a database that cannot be opened."""
    unreachable = sessionmaker(create_engine("sqlite:////nonexistent-folder/app.db"))

    def session():
        with unreachable() as opened:
            yield opened

    app.dependency_overrides[get_session] = session
    response = client.get("/users/1")
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "The database is unavailable: unable to open database file"},
    )


def test_a_tasks_state_as_json():
    """What GET /tasks/{id} and the WebSocket answer, from what the result backend stored: here, a RETRY."""
    stored = {"status": "RETRY", "result": ConnectionError("refused"), "retries": 0}
    assert status_json("the-task-id", stored) == {
        "task_id": "the-task-id",
        "state": "RETRY",
        "retries": 1,
        "result": None,
        "error": "ConnectionError: refused",
    }
