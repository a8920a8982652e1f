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
from email_service import THIRD_PARTY_URL
from models import User
from tasks import subscribe, subscribe_user

HEALTH = "email-service-health"  # the key of the latest check, and the channel each check is published on
# The subscriptions that failed because the service did not answer: each address, with its task's id
FAILED = "subscriptions-failed"
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


# Sent after the last retry. A refused connection or a timeout is kept; a 503 is the service's answer, and is not.
@task_failure.connect
def keep_failed_subscription(sender, task_id, exception, args, **kwargs):
    if sender.name == subscribe.name and isinstance(exception, (requests.ConnectionError, requests.Timeout)):
        redis().hset(FAILED, args[0], task_id)


@shared_task(ignore_result=True)
def resend_failed():
    health = json.loads(redis().get(HEALTH) or "{}")
    if health.get("service") != "up":
        return {"resent": [], "waiting": redis().hlen(FAILED), "users": []}
    failed = sorted((email.decode(), task_id.decode()) for email, task_id in redis().hgetall(FAILED).items())
    for email, task_id in failed:
        # Under the same id: GET /tasks/{id}, and a page that watches it, see the new run
        subscribe.apply_async([email], task_id=task_id)
        redis().hdel(FAILED, email)  # once sent: a crash in between sends it twice, never loses it
    users = unfinished_users()
    for user_id, task_id in users:
        subscribe_user.apply_async([user_id], task_id=task_id)  # the same id: GET /users/{id} shows the new run
    emails = [email for email, _ in failed]
    return {"resent": emails, "waiting": redis().hlen(FAILED), "users": [user_id for user_id, _ in users]}


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
