"""The tasks, called as functions: no broker, no worker, the email service answered by `responses`.

The fastest layer, for what a task does with its input; a retry is seen as the Retry that Celery raises, with its
countdown, not waited for (ch10_testing/README.md, "The task as a function").
"""

import json
from unittest.mock import ANY, Mock, call

import pytest
import requests
from celery.exceptions import Retry
from responses import matchers
from sqlalchemy.exc import NoResultFound

import tasks
from database import Session
from email_service import THIRD_PARTY_URL
from models import User
from tasks import divide, import_list, subscribe, subscribe_user

SUBSCRIBE = f"{THIRD_PARTY_URL}/subscribe"
UNAVAILABLE = f"503 Server Error: Service Unavailable for url: {SUBSCRIBE}"


@pytest.fixture
def no_sleep(monkeypatch):
    """divide's five seconds of pretended work, skipped: what is tested is the arithmetic."""
    monkeypatch.setattr(tasks, "sleep", lambda seconds: None)


def test_divide_is_a_function(no_sleep):
    assert divide(1, 2) == 0.5


def test_divide_by_zero_raises_as_python_does(no_sleep):
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)


def test_a_quotient_json_cannot_hold_is_an_error(no_sleep):
    with pytest.raises(OverflowError, match=r"^1e\+308 / 1e-308 is too large for a float$"):
        divide(1e308, 1e-308)


def test_subscribe_sends_the_address_and_returns_the_answer(email_service):
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    assert subscribe("ann@example.com") == {"subscribed": "ann@example.com"}
    assert json.loads(email_service.calls[0].request.body) == {"email": "ann@example.com"}


def test_a_503_is_retried_after_up_to_5_s(email_service, monkeypatch):
    """Celery's own way (its testing guide): retry() replaced, to raise Retry as it would, and record its arguments.
    The wait is drawn at random, from 0 to 5 s (retrying.py: back-off with jitter)."""
    email_service.post(SUBSCRIBE, status=503)
    retry = Mock(side_effect=Retry())
    monkeypatch.setattr(subscribe, "retry", retry)
    with pytest.raises(Retry):
        subscribe("ann@example.com")
    retry.assert_called_once_with(exc=ANY, countdown=ANY)
    assert str(retry.call_args.kwargs["exc"]) == UNAVAILABLE
    assert retry.call_args.kwargs["countdown"] in range(6)


def test_a_service_that_stays_down_is_a_failure_after_three_retries(email_service):
    """apply() runs the task as a worker would, retries included, but at once: four calls, no wait."""
    email_service.post(SUBSCRIBE, status=503)
    result = subscribe.apply(["ann@example.com"])
    assert (result.state, str(result.result)) == ("FAILURE", UNAVAILABLE)
    assert isinstance(result.result, requests.HTTPError)
    assert len(email_service.calls) == 4


def test_a_service_back_after_one_503_is_a_success(email_service):
    email_service.post(SUBSCRIBE, status=503)
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    result = subscribe.apply(["ann@example.com"])
    assert (result.state, result.result) == ("SUCCESS", {"subscribed": "ann@example.com"})


def test_an_import_reports_its_progress_and_its_failures(email_service, monkeypatch):
    """Each address answered by its own rule (a matcher on the body); update_state replaced, so nothing is stored."""
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"}, match=[json_of("ann@example.com")])
    email_service.post(SUBSCRIBE, status=503, match=[json_of("bob@example.com")])
    update_state = Mock()
    monkeypatch.setattr(import_list, "update_state", update_state)
    assert import_list(["ann@example.com", "bob@example.com"]) == {
        "subscribed": 1,
        "failed": [f"bob@example.com: {UNAVAILABLE}"],
    }
    assert update_state.call_args_list == [
        call(state="PROGRESS", meta={"done": 1, "total": 2}),
        call(state="PROGRESS", meta={"done": 2, "total": 2}),
    ]


def json_of(email):
    return matchers.json_params_matcher({"email": email})


def test_subscribe_user_records_the_subscription_once(user, email_service):
    """Run twice (a worker may run a task twice): the service is called once, and subscribed_at kept."""
    email_service.post(SUBSCRIBE, json={"subscribed": user.email})
    assert subscribe_user(user.id) == {"subscribed": "ann@example.com"}
    first = subscribed_at(user.id)
    assert subscribe_user(user.id) == {"subscribed": "ann@example.com"}
    assert (len(email_service.calls), subscribed_at(user.id)) == (1, first)
    assert first is not None


def subscribed_at(user_id):
    with Session() as session:
        return session.get(User, user_id).subscribed_at


def test_subscribe_user_retries_a_503_as_subscribe_does(user, email_service, monkeypatch):
    email_service.post(SUBSCRIBE, status=503)
    retry = Mock(side_effect=Retry())
    monkeypatch.setattr(subscribe_user, "retry", retry)
    with pytest.raises(Retry):
        subscribe_user(user.id)
    retry.assert_called_once_with(exc=ANY, countdown=ANY)
    assert (subscribe_user.max_retries, subscribed_at(user.id)) == (3, None)


def test_subscribe_user_finds_no_user_that_is_not_committed():
    with pytest.raises(NoResultFound):
        subscribe_user(2**31 - 1)
