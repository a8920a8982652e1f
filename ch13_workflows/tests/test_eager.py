"""Eager mode: what it is good for, and what it hides (ch10_testing/README.md, "Eager mode, and what it hides").

With task_always_eager, delay() runs the task at once, in the caller: a view and its task run in one request, with
no broker and no worker. But nothing is turned into JSON and no countdown is waited for, so the last two tests pass in
eager mode and fail against a real worker. They are kept, run both ways: the worker's run is marked
xfail(strict=True), so the suite passes while it fails as it should, and fails should it ever pass.
"""

from datetime import UTC, datetime, timedelta

import pytest
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as ResultNotReady
from kombu.exceptions import EncodeError

import tasks
from database import Session
from email_service import THIRD_PARTY_URL
from images import UPLOADS, make_thumbnail
from models import User
from tasks import divide, subscribe

SUBSCRIBE = f"{THIRD_PARTY_URL}/subscribe"


def test_eager_a_new_user_is_subscribed_within_the_request(client, eager, email_service):
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    created = client.post("/users", json={"email": "ann@example.com", "name": "Ann"})
    assert created.status_code == 201
    with Session() as session:
        assert session.get(User, created.json()["id"]).subscribed_at is not None  # before the answer came back


def test_eager_a_tasks_error_reaches_the_test(client, eager, no_sleep):
    """task_eager_propagates: the task's own exception, with its traceback, raised through the view; a worker would
    store it as a FAILURE, and the view would answer with the task's id."""
    with pytest.raises(ZeroDivisionError):
        client.post("/divide", json={"x": 1, "y": 0})


@pytest.fixture
def no_sleep(monkeypatch):
    """divide's five seconds of pretended work, skipped, in eager mode and on the worker alike (one process)."""
    monkeypatch.setattr(tasks, "sleep", lambda seconds: None)


@pytest.fixture
def mode(request):
    """The test's run: in eager mode, or against the real worker."""
    return request.getfixturevalue(request.param)


def eager_then_worker(raises, reason):
    """Run the test in eager mode, where it passes, then against the real worker, where it fails with `raises`."""
    failing = pytest.mark.xfail(raises=raises, reason=reason, strict=True)
    return pytest.mark.parametrize(
        "mode", ["eager", pytest.param("worker", marks=[pytest.mark.worker, failing])], indirect=True
    )


def test_eager_sends_the_arguments_through_json_too(eager, user):
    """Celery 5 turns an eager task's arguments into JSON and back, as a worker would get them: a Path is refused in
    eager mode too (images.py sends the upload's name, a str)."""
    with pytest.raises(EncodeError, match="Object of type PosixPath is not JSON serializable"):
        make_thumbnail.delay(user.id, UPLOADS / "photo")


@eager_then_worker(
    ResultNotReady, "eager ignores countdown: a worker runs the task 5 s later, so it is not done in 1 s"
)
def test_a_subscription_sent_to_run_in_5_s(mode, email_service):
    """A task sent with a countdown, as a retry is: eager runs it at once."""
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    result = subscribe.apply_async(["ann@example.com"], countdown=5)
    assert result.get(timeout=1) == {"subscribed": "ann@example.com"}


@eager_then_worker(
    TaskRevokedError, "eager ignores expires: a worker drops a task whose time ran out before it took it"
)
def test_a_division_that_expired_before_it_ran(no_sleep, mode):
    """Sent with an expiry already past, as beat's health check is when no worker took it in time (chapter 7's
    `expires`): eager runs it all the same."""
    result = divide.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
    assert result.get(timeout=10) == 0.5
