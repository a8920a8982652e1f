"""Retries in one place: retrying.Retrying, the base of every task that calls the outside world. The errors worth
retrying are retried, with back-off and jitter; bad input never; a wait is not a try.

README: "Retries in one place".
"""

import logging

import requests
from sqlalchemy.exc import OperationalError

import tasks
from config import get_settings
from email_service import THIRD_PARTY_URL, BadAddress
from exports import BadRow, write_chunk
from images import BadImage, make_thumbnail
from ratelimit import RateLimited
from retrying import Retrying
from tasks import subscribe, subscribe_user

SUBSCRIBE = f"{THIRD_PARTY_URL}/subscribe"


def test_every_task_that_calls_the_outside_world_has_the_base():
    assert all(isinstance(task, Retrying) for task in (subscribe, subscribe_user, make_thumbnail, write_chunk))


def test_what_is_worth_retrying_and_what_is_not():
    worth = (requests.ConnectionError, requests.Timeout, requests.HTTPError, OperationalError, RateLimited)
    assert all(issubclass(error, Retrying.autoretry_for) for error in worth)
    # bad input: the same input would fail the same way
    assert not any(issubclass(error, Retrying.autoretry_for) for error in (BadAddress, BadImage, BadRow))


def test_no_task_waits_past_the_visibility_timeout():
    """A task held for its countdown is handed out again after the visibility_timeout (config.py): the longest wait
    and the longest run, together, must be shorter."""
    conf = get_settings()
    longest = Retrying.retry_backoff_max + conf.CELERY_TASK_TIME_LIMIT
    assert longest < conf.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]


def test_a_bad_address_is_a_failure_at_once(email_service):
    email_service.post(SUBSCRIBE, status=422, json={"detail": "ann+invalid@example.com is not an address"})
    result = subscribe.apply(["ann+invalid@example.com"])
    assert (result.state, type(result.result)) == ("FAILURE", BadAddress)
    assert str(result.result).startswith("the service refused ann+invalid@example.com: 422 ")
    assert len(email_service.calls) == 1


def test_too_many_calls_is_worth_retrying(email_service):
    email_service.post(SUBSCRIBE, status=429)
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    assert subscribe.apply(["ann@example.com"]).get() == {"subscribed": "ann@example.com"}


class LockedOnce:
    """tasks.Session, whose first session fails as SQLite's does while another connection holds the lock."""

    def __init__(self, sessionmaker):
        self.sessionmaker, self.locked = sessionmaker, True

    def __call__(self):
        if self.locked:
            self.locked = False
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return self.sessionmaker()

    def begin(self):
        return self.sessionmaker.begin()


def test_the_database_away_is_waited_for_and_not_counted(worker, user, email_service, monkeypatch, caplog):
    """The task waits, and tries again up to 5 s later; its count of retries stays 0."""
    monkeypatch.setattr(tasks, "Session", LockedOnce(tasks.Session))
    email_service.post(SUBSCRIBE, json={"subscribed": user.email})
    caplog.set_level(logging.INFO, "celery")
    result = subscribe_user.delay(user.id)
    assert result.get(timeout=15) == {"subscribed": "ann@example.com"}
    assert result.retries == 0
    assert "DatabaseUnavailable('The database is unavailable: database is locked')" in caplog.text
