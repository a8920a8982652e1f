"""An export, through the real worker in the test process: a chord of chunk tasks, then join; its progress as the
WebSocket pushes it; a cancel; a bad row; bad input. Every test here is marked `worker`.

README: "An export in chunks".
"""

import csv
import io

import pytest
from celery import Celery
from celery.exceptions import ChordError
from celery.states import READY_STATES

import exports
from conftest import wait_for
from database import Session
from exports import join, write_chunk
from models import User
from seed import seed

COLUMNS = ["id", "email", "name", "created_at", "subscribed_at"]


@pytest.fixture
def users():
    """120 users, as `python seed.py 120` adds them: their ids and addresses."""
    seed(120)
    with Session() as session:
        return [(user.id, user.email) for user in session.query(User).order_by(User.id)]


def start(client, **options):
    answered = client.post("/exports", json=options)
    assert answered.status_code == 202, answered.text
    return answered.json()["task_id"]


def rows(client, url):
    return list(csv.reader(io.StringIO(client.get(url).text)))


def test_an_export_is_every_user_once_in_one_file(client, worker, users):
    task_id = start(client, chunk_size=50)
    assert join.AsyncResult(task_id).get(timeout=20) == {"url": f"/media/exports/{task_id}.csv", "users": 120}
    assert client.get(f"/exports/{task_id}").json() == {
        "task_id": task_id,
        "state": "SUCCESS",
        "done": 3,
        "total": 3,
        "users": 120,
        "url": f"/media/exports/{task_id}.csv",
        "error": None,
    }
    served = rows(client, f"/media/exports/{task_id}.csv")
    assert served[0] == COLUMNS
    assert [(int(row[0]), row[1]) for row in served[1:]] == users
    assert not (exports.CHUNKS / task_id).exists()


def test_an_export_of_no_user_is_its_header_alone(client, worker):
    task_id = start(client)
    assert join.AsyncResult(task_id).get(timeout=20)["users"] == 0
    assert rows(client, f"/media/exports/{task_id}.csv") == [COLUMNS]


def test_each_chunk_is_pushed_as_the_exports_progress(started_client, worker, users):
    """The socket may open once a chunk or two are written: it gets the stored state first, then the rest."""
    task_id = start(started_client, chunk_size=50)
    with started_client.websocket_connect(f"/ws/task_status/{task_id}") as websocket:
        pushed = [websocket.receive_json()]
        while pushed[-1]["state"] not in ("SUCCESS", "FAILURE"):
            pushed.append(websocket.receive_json())
    progress = [status["result"] for status in pushed if status["state"] == "PROGRESS"]
    assert progress == [{"done": done, "total": 3} for done in (1, 2, 3)][3 - len(progress) :]
    assert [status["state"] for status in pushed][-2:] == ["STARTED", "SUCCESS"]


def test_a_chunk_run_twice_writes_the_same_file(worker, users):
    """What happens when a worker dies holding a chunk: it runs again, and writes the same file again."""
    first, last = users[0][0], users[49][0]
    write_chunk.backend.client.hset(exports.keys("an-export")[0], "total", 1)  # as POST /exports records it
    write_chunk.apply(["an-export", 0, first, last]).get()
    written = (exports.CHUNKS / "an-export" / "00000.csv").read_text()
    write_chunk.apply(["an-export", 0, first, last]).get()
    assert (exports.CHUNKS / "an-export" / "00000.csv").read_text() == written
    assert [path.name for path in (exports.CHUNKS / "an-export").iterdir()] == ["00000.csv"]


def test_a_cancel_stops_the_chunks_and_join_never_runs(client, worker, users, monkeypatch):
    """Each chunk takes 0.2 s here, one after the other: the cancel comes while the first runs."""
    monkeypatch.setattr(exports, "DELAY", 0.2)
    task_id = start(client, chunk_size=50)
    cancelled = client.delete(f"/exports/{task_id}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["error"]) == ("REVOKED", "TaskRevokedError: revoked")
    chunks = [write_chunk.AsyncResult(f"{task_id}-{index:05}") for index in range(3)]
    wait_for(lambda: all(chunk.state in READY_STATES for chunk in chunks), 10, "every chunk to end")
    assert [chunk.state for chunk in chunks].count("REVOKED") >= 2  # the first may have ended before the cancel
    assert join.AsyncResult(task_id).state == "REVOKED"
    assert not (exports.CHUNKS / task_id).exists() and not (exports.EXPORTS / f"{task_id}.csv").exists()
    again = client.delete(f"/exports/{task_id}")
    assert (again.status_code, again.json()) == (409, {"detail": f"export {task_id} has ended already: REVOKED"})


def test_a_bad_row_fails_the_export_with_the_chunks_error(client, worker, users):
    with Session.begin() as session:
        bad = User(email="not-an-address", name="Bad", task_id="none")
        session.add(bad)
    task_id = start(client, chunk_size=50)
    with pytest.raises(ChordError) as failed:
        join.AsyncResult(task_id).get(timeout=20)
    assert str(failed.value) == (
        f"Dependency {task_id}-00002 raised "
        f"BadRow('user {bad.id}: value is not a valid email address: An email address must have an @-sign.')"
    )
    wait_for(lambda: not (exports.CHUNKS / task_id).exists(), 10, "discard, the export's error callback")
    assert not (exports.EXPORTS / f"{task_id}.csv").exists()


@pytest.mark.parametrize("body", [{"chunk_size": 0}, {"chunk_size": 1_000_000}, {"chunk_size": 49}, {"size": 50}])
def test_bad_options_are_a_422(client, body):
    assert client.post("/exports", json=body).status_code == 422


def test_an_unknown_export_is_a_404(client, redis_url):
    for method in ("GET", "DELETE"):
        answered = client.request(method, "/exports/nope")
        assert (answered.status_code, answered.json()) == (404, {"detail": "no export nope"})


def test_exports_need_the_redis_result_backend(client, monkeypatch):
    """The testing settings keep results in memory, where an export has nowhere to keep its progress: a 503, not a
    500 (README: "Troubleshooting")."""
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)  # which Celery reads before its own setting
    state = client.app.state
    # As config.py's TestingConfig has it; not made the current app, which the chapter's tasks would then run on
    in_memory = Celery(backend="cache+memory://", set_as_current=False)
    saved, state.celery = state.celery, in_memory
    try:
        for method, path in (("POST", "/exports"), ("GET", "/exports/nope"), ("DELETE", "/exports/nope")):
            answered = client.request(method, path)
            assert (answered.status_code, answered.json()) == (503, {"detail": "exports need the Redis result backend"})
    finally:
        state.celery = saved
