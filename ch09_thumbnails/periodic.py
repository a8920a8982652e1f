"""The tasks beat sends (see config.CELERY_BEAT_SCHEDULE): a health check of the email service, and a sweep that
sends again the subscriptions that failed while it did not answer, and the users whose subscription never ended.

Run beat beside the worker: celery -A main.celery beat --loglevel=info
"""

import json
from datetime import UTC, datetime, timedelta

import requests
from celery import shared_task
from celery.signals import task_failure
from sqlalchemy import select

from database import Session
from models import User
from tasks import THIRD_PARTY_URL, subscribe, subscribe_user

HEALTH = "email-service-health"  # the key of the latest check, and the channel each check is published on
FAILED = "subscriptions-failed"  # the addresses whose subscription failed because the service did not answer
RESEND_AFTER = timedelta(minutes=2)  # a user's task and its three retries are over by then


def redis():  # the result backend's own client: its Redis also keeps RedBeat's schedule
    return subscribe.backend.client


@shared_task(ignore_result=True)  # its result goes to HEALTH, not to a new key each time
def check_service():
    try:
        requests.get(f"{THIRD_PARTY_URL}/health", timeout=2).raise_for_status()
        error = None
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    service = "down" if error else "up"
    health = json.dumps({"service": service, "checked_at": datetime.now(UTC).isoformat(), "error": error})
    redis().pipeline().set(HEALTH, health).publish(HEALTH, health).execute()  # as the result backend stores a state
    return service


@task_failure.connect
def keep_failed_subscription(sender, exception, args, **kwargs):  # after the last retry; a 503 is the service's answer
    if sender.name == subscribe.name and isinstance(exception, (requests.ConnectionError, requests.Timeout)):
        redis().sadd(FAILED, args[0])


@shared_task(ignore_result=True)
def resend_failed():
    health = json.loads(redis().get(HEALTH) or "{}")
    if health.get("service") != "up":
        return {"resent": [], "waiting": redis().scard(FAILED), "users": []}
    emails = sorted(email.decode() for email in redis().smembers(FAILED))
    for email in emails:
        subscribe.delay(email)
        redis().srem(FAILED, email)  # once sent: a crash in between sends it twice, never loses it
    users = unfinished_users()
    for user_id, task_id in users:
        subscribe_user.apply_async([user_id], task_id=task_id)  # the same id: GET /users/{id} shows the new run
    return {"resent": emails, "waiting": redis().scard(FAILED), "users": [user_id for user_id, _ in users]}


def unfinished_users():
    """The users not subscribed RESEND_AFTER after they were stored, whose task was lost (never sent, so PENDING:
    Redis went away after the commit) or failed because the service did not answer; not those it refused."""
    with Session() as session:
        stored_before = datetime.now(UTC) - RESEND_AFTER
        waiting = select(User.id, User.task_id).where(User.subscribed_at.is_(None), User.created_at < stored_before)
        users = session.execute(waiting).all()
    results = [(user, subscribe_user.AsyncResult(user.task_id)) for user in users]
    return [
        (user.id, user.task_id)
        for user, result in results
        if result.state == "PENDING"
        or (result.state == "FAILURE" and isinstance(result.result, requests.ConnectionError | requests.Timeout))
    ]
