"""Beat's schedule, tested as data: what it sends, how often, and when next; not by running beat.

ch10_testing/README.md, "Beat's schedule, as data".
"""

from datetime import UTC, datetime, timedelta

from main import celery
from scheduler import PatientRedBeatScheduler

SCHEDULE = celery.conf.beat_schedule


def test_every_entry_names_a_task_the_worker_knows():
    """A misspelt name is found here, not by a worker that answers NotRegistered every ten seconds."""
    assert {entry["task"] for entry in SCHEDULE.values()} <= set(celery.tasks)


def test_the_health_check_runs_every_10_s_and_expires_before_the_next():
    entry = SCHEDULE["check-email-service"]
    assert (entry["task"], entry["schedule"], entry["options"]) == ("periodic.check_service", 10, {"expires": 8})


def test_the_sweep_runs_at_the_start_of_each_minute(monkeypatch):
    """The crontab asked when it is next due, with its clock set: at 08:00:30, it ran at 08:00 and runs at 08:01."""
    schedule = SCHEDULE["resend-failed-subscriptions"]["schedule"]
    now = datetime(2026, 1, 1, 8, 0, 30, tzinfo=UTC)
    monkeypatch.setattr(schedule, "nowfun", lambda: now)
    assert schedule.remaining_estimate(now.replace(second=0)) == timedelta(seconds=30)
    assert schedule.is_due(now.replace(second=0)) == (False, 30)
    assert schedule.is_due(now - timedelta(minutes=1)) == (True, 30)  # missed: due now, then again in 30 s


def test_beat_keeps_its_schedule_in_redis_under_a_lock():
    """One beat sends, any other waits (RedBeat); its lock outlives a dead beat by 30 s at most."""
    assert celery.conf.beat_scheduler is PatientRedBeatScheduler
    assert (celery.conf.timezone, celery.conf.redbeat_lock_timeout, celery.conf.beat_max_loop_interval) == (
        "UTC",
        30,
        5,
    )
