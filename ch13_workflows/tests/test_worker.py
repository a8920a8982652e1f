"""A real worker, in the test process (Celery's start_worker), on a real Redis the conftest starts: the tasks go
through Redis as JSON, run on the worker, and come back as states, as they do in production. Every test here is
marked `worker` (ch10_testing/README.md, "A real worker in the test process").
"""

import uuid

import pytest
from sqlalchemy.exc import NoResultFound

from database import Session
from email_service import THIRD_PARTY_URL
from images import make_thumbnail
from models import User
from periodic import FAILED, HEALTH, check_service, redis, resend_failed
from pictures import image
from tasks import subscribe, subscribe_user

SUBSCRIBE = f"{THIRD_PARTY_URL}/subscribe"


def test_a_new_user_is_subscribed_by_the_worker(client, worker, email_service):
    """Commit, then send: the worker finds the user, and GET /users/{id} shows the task's SUCCESS."""
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    created = client.post("/users", json={"email": "ann@example.com", "name": "Ann"}).json()
    assert subscribe_user.AsyncResult(created["task_id"]).get(timeout=10) == {"subscribed": "ann@example.com"}
    user = client.get(f"/users/{created['id']}").json()
    assert user == {
        "id": created["id"],
        "email": "ann@example.com",
        "name": "Ann",
        "created_at": user["created_at"],
        "subscribed_at": user["subscribed_at"],
        "thumbnail_url": None,
        "task": {
            "task_id": created["task_id"],
            "state": "SUCCESS",
            "retries": 0,
            "result": {"subscribed": "ann@example.com"},
            "error": None,
        },
    }
    assert user["created_at"] < user["subscribed_at"]


def test_a_task_sent_before_the_commit_finds_no_user(worker):
    """The mistake that commit-then-send avoids, made on purpose: the row is written but not committed while the
    worker runs the task, so the worker's session cannot see it."""
    with Session() as session:
        ann = User(email="ann@example.com", name="Ann", task_id=str(uuid.uuid4()))
        session.add(ann)
        session.flush()  # the INSERT is sent, inside a transaction still open
        result = subscribe_user.apply_async([ann.id], task_id=ann.task_id)
        with pytest.raises(NoResultFound):
            result.get(timeout=10)


def test_every_state_is_pushed_over_the_websocket(started_client, worker, email_service):
    """A 503, then a 200: PENDING (nothing sent yet), STARTED, RETRY, STARTED, SUCCESS, each pushed as stored."""
    # The retry waits up to 5 s (retrying.py): the states are the point here, not the wait
    email_service.post(SUBSCRIBE, status=503)
    email_service.post(SUBSCRIBE, json={"subscribed": "ann@example.com"})
    task_id = str(uuid.uuid4())
    with started_client.websocket_connect(f"/ws/task_status/{task_id}") as websocket:
        pushed = [websocket.receive_json()]
        subscribe.apply_async(["ann@example.com"], task_id=task_id)
        while pushed[-1]["state"] not in ("SUCCESS", "FAILURE"):
            pushed.append(websocket.receive_json())
    assert [(status["state"], status["retries"]) for status in pushed] == [
        ("PENDING", 0),
        ("STARTED", 0),
        ("RETRY", 1),
        ("STARTED", 1),
        ("SUCCESS", 1),
    ]
    assert pushed[2]["error"] == f"HTTPError: 503 Server Error: Service Unavailable for url: {SUBSCRIBE}"
    assert pushed[-1]["result"] == {"subscribed": "ann@example.com"}


def test_an_avatar_is_made_a_thumbnail_by_the_worker(client, worker, user):
    """The upload's task goes to the `images` queue (config.py's routes), which this worker consumes too."""
    sent = client.post(f"/users/{user.id}/avatar", files={"file": ("photo.jpg", image(size=(640, 480)))})
    assert sent.status_code == 202
    done = make_thumbnail.AsyncResult(sent.json()["task_id"]).get(timeout=10)
    assert (done["width"], done["height"]) == (128, 96)
    served = client.get(done["thumbnail_url"])
    assert (served.status_code, served.headers["content-type"]) == (200, "image/png")
    assert client.get(f"/users/{user.id}").json()["thumbnail_url"] == done["thumbnail_url"]


@pytest.fixture
def periodic_keys(redis_url):
    """The keys of beat's tasks in Redis, deleted before the test and after it: other tests read them."""
    redis().delete(HEALTH, FAILED)
    yield
    redis().delete(HEALTH, FAILED)


def test_the_health_check_is_stored_and_served(started_client, periodic_keys, email_service):
    """Beat's task, called as a function: it needs Redis, where it stores what it found."""
    email_service.get(f"{THIRD_PARTY_URL}/health", json={"status": "ok"})
    assert check_service() == "up"
    health = started_client.get("/health").json()
    assert (health["service"], health["error"]) == ("up", None)
    with started_client.websocket_connect("/ws/health") as websocket:
        assert websocket.receive_json()["service"] == "up"


def test_the_sweep_sends_again_what_failed_while_the_service_was_down(periodic_keys, worker, email_service):
    """Under the failed task's id, so that GET /tasks/{id}, and a page that watches it, see the new run."""
    email_service.post(SUBSCRIBE, json={"subscribed": "bob@example.com"})
    redis().set(HEALTH, '{"service": "up", "checked_at": "2026-01-01T08:00:00+00:00", "error": null}')
    failed = str(uuid.uuid4())
    redis().hset(FAILED, "bob@example.com", failed)
    assert resend_failed() == {"resent": ["bob@example.com"], "waiting": 0, "users": []}
    assert subscribe.AsyncResult(failed).get(timeout=10) == {"subscribed": "bob@example.com"}
