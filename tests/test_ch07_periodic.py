"""ch07_periodic, in the order of its README: the diff, what beat and the worker print, the health check and the sweep,
the crontab's next run, once per tick with two workers and a second beat, no pile-up, beat restarted, Redis away,
the page, and run_all.sh starting beat with the rest.

Everything runs as a reader runs it: the stand-in, two workers and beat started with the README's commands, the
health check every second (HEALTH_CHECK_INTERVAL=1) instead of every ten.
"""

import re

import httpx2
import pytest
import redis
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from websockets.sync.client import connect

from beat_helpers import checks_during, earlier_tasks_results, health_checks, next_run, second_terminal
from helpers import address, no_request_gets_a_server_error, readme_has_current_diff, start_workers
from processes import Process, wait_for
from scenarios import assert_redis_down_then_back

CHAPTER = "ch07_periodic"
BEAT = ("celery", "-A", "main.celery", "beat", "--loglevel=info")


@pytest.fixture(scope="module")
def chapter_env(chapter_env):
    return chapter_env | {"THIRD_PARTY_DELAY": "0.1", "HEALTH_CHECK_INTERVAL": "1"}


@pytest.fixture(scope="module")
def workers(start):
    """The two workers now running: a test that stops them puts new ones in their place."""
    return start_workers(start)


def start_beat(start):
    process = start(*BEAT)
    process.wait_for_output("beat: Acquired lock", timeout=30)
    return process


@pytest.fixture(scope="module")
def beats(start):
    """The beats started, the one sending last: a test that stops it puts another in its place."""
    return [start_beat(start)]


@pytest.fixture(scope="module")
def stand_in(third_party, start, chapter_env):
    """The email service's stand-in; stand_in.stop() and stand_in.start() take it away and bring it back."""

    class StandIn:
        process = third_party

        def stop(self):
            self.process.stop()

        def start(self):
            port = chapter_env["THIRD_PARTY_URL"].rsplit(":", 1)[1]
            self.process = start("uvicorn", "third_party:app", "--port", port)
            self.process.wait_for_output("Uvicorn running on", timeout=30)

    return StandIn()


def health(web):
    return httpx2.get(f"{web}/health").json()


def worker_output(workers):
    return "".join(worker.output for worker in workers)


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)


def test_the_api_names_its_chapter(main):
    info = TestClient(main.app).get("/openapi.json").json()["info"]
    assert info == {"title": "Chapter 7: periodic tasks", "version": "ch07_periodic"}


def test_a_second_terminal_with_redis_url_alone_reaches_the_workers(chapter, chapter_env, workers, redis_url):
    inspect = Process(
        ["celery", "-A", "main.celery", "inspect", "ping"], chapter, second_terminal(chapter_env, redis_url)
    )
    wait_for(lambda: inspect.proc.poll() is not None, 30, "celery inspect ping")
    assert (inspect.stop(), inspect.output.count(": OK")) == (0, 2), inspect.output


def test_beat_sends_the_check_and_a_worker_runs_it(beats, workers, stand_in):
    beats[-1].wait_for_output("Scheduler: Sending due task check-email-service (periodic.check_service)", timeout=10)
    wait_for(
        lambda: re.search(
            r"Task periodic\.check_service\[[-0-9a-f]+\] succeeded in [0-9.e-]+s: 'up'", worker_output(workers)
        ),
        10,
        "a check's line in a worker's output",
    )


def test_get_health_shows_the_latest_check(web, beats, workers, stand_in):
    body = wait_for(lambda: (body := health(web))["service"] == "up" and body, 10, "a check")
    assert set(body) == {"service", "checked_at", "error", "age"}
    assert (body["service"], body["error"]) == ("up", None)
    assert body["checked_at"].endswith("+00:00") and 0 <= body["age"] < 3


def test_a_subscription_failed_while_the_service_was_away_is_sent_again(main, web, beats, workers, stand_in, redis_url):
    away, refused = address(), address("+down")  # +down: the service answers, 503; it is not sent again
    refused_id = main.subscribe.delay(refused).id
    wait_for(lambda: main.celery.AsyncResult(refused_id).state == "FAILURE", 15, "the refused subscription to fail")
    stand_in.stop()
    wait_for(lambda: health(web)["service"] == "down", 10, "a check to find the service down")
    assert health(web)["error"].startswith("ConnectionError: ")

    task_id = main.subscribe.delay(away).id
    wait_for(lambda: main.celery.AsyncResult(task_id).state == "FAILURE", 15, "the subscription to fail")
    failed = redis.Redis.from_url(redis_url)
    assert failed.hgetall("subscriptions-failed") == {away.encode(): task_id.encode()}
    sweep = main.celery.send_task("periodic.resend_failed").id  # as beat sends it
    wait_for(lambda: f"Task periodic.resend_failed[{sweep}] succeeded" in worker_output(workers), 10, "the sweep")
    assert re.search(
        rf"resend_failed\[{sweep}\] succeeded in \S+: {{'resent': \[\], 'waiting': 1}}", worker_output(workers)
    )

    stand_in.start()
    wait_for(lambda: health(web)["service"] == "up", 10, "a check to find the service up")
    main.celery.send_task("periodic.resend_failed")  # the crontab's next run may be up to a minute away
    wait_for(lambda: f"{away}, call 1: 200 subscribed" in stand_in.process.output, 15, "the subscription sent again")
    assert re.search(rf"succeeded in \S+: {{'resent': \['{re.escape(away)}'\], 'waiting': 0}}", worker_output(workers))
    assert failed.hgetall("subscriptions-failed") == {}
    assert main.celery.AsyncResult(task_id).get(timeout=10) == {"subscribed": away}  # the same task id, run again


def test_the_sweep_runs_at_the_start_of_each_minute_utc(main, beats):
    assert main.celery.conf.timezone == "UTC"
    now = main.celery.now()
    when = next_run(main.celery, "resend-failed-subscriptions")
    assert str(when.tzinfo) == "UTC" and 0 < (when - now).total_seconds() <= 60
    assert (when.second, when.microsecond // 10_000) == (0, 0)  # 12:34:00, to the hundredth of a second


def test_two_workers_run_each_check_once(beats, workers, stand_in, redis_url):
    assert 5 <= len(checks_during(redis_url, 6)) <= 7  # one a second, give or take one at the window's edges


def test_a_second_beat_waits_and_takes_over_when_the_first_stops(start, beats, workers, stand_in, redis_url):
    second = start(*BEAT)
    second.wait_for_output("beat: Starting...", timeout=30)
    assert 5 <= len(checks_during(redis_url, 6)) <= 7
    assert "Sending due task" not in second.output and "Acquired lock" not in second.output

    beats.pop().stop()  # as Ctrl+C in its terminal: it lets go of the lock
    beats.append(second)
    second.wait_for_output("beat: Acquired lock", timeout=10)  # it asks every 5 s (beat_max_loop_interval)
    second.wait_for_output("Sending due task check-email-service", timeout=5)
    assert 2 <= len(checks_during(redis_url, 3)) <= 4


def test_workers_back_after_20_s_run_at_most_one_stale_check(start, beats, workers, stand_in, redis_url):
    for worker in workers:  # both at once, as two terminals' Ctrl+C
        worker.proc.terminate()
    for worker in workers:
        worker.stop()
    sent = beats[-1].output.count("Sending due task check-email-service")
    wait_for(lambda: beats[-1].output.count("Sending due task check-email-service") >= sent + 20, 30, "20 checks sent")
    with health_checks(redis_url) as collect:
        workers[:] = start_workers(start)
        assert len(collect(1)) <= 3  # the one sent less than 0.8 s before (expires), and a second's new ones
    assert worker_output(workers).count("Discarding revoked task: periodic.check_service[") >= 15


def test_beat_stopped_then_started_again_sends_no_burst(start, beats, workers, stand_in, redis_url):
    beats.pop().stop()
    assert checks_during(redis_url, 5) == []  # nothing is sent while beat is away
    beats.append(start_beat(start))
    assert 1 <= len(checks_during(redis_url, 2)) <= 3  # the overdue check once, then one a second: not five at once


def test_both_beats_wait_for_redis_and_the_waiting_one_takes_over_later(start, restartable_redis):
    url = restartable_redis.url
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
    holder, waiting = start(*BEAT, env=env), None
    try:
        holder.wait_for_output("Sending due task check-email-service", timeout=30)
        waiting = start(*BEAT, env=env)
        waiting.wait_for_output("beat: Starting...", timeout=30)
        restartable_redis.stop()
        for beat in (holder, waiting):  # the waiting one asks for the lock every 5 s
            beat.wait_for_output("beat: Redis is unreachable (Error 111 connecting to", timeout=10)
        restartable_redis.start()
        sent = holder.output.count("Sending due task check-email-service")
        wait_for(lambda: holder.output.count("Sending due task check-email-service") > sent, 10, "a check sent again")
        holder.stop()  # as Ctrl+C: it lets go of the lock
        waiting.wait_for_output("beat: Acquired lock", timeout=10)
        waiting.wait_for_output("Sending due task check-email-service", timeout=5)
        for beat in (holder, waiting):
            assert "Traceback" not in beat.output and "raised:" not in beat.output, beat.output
        assert waiting.proc.poll() is None
    finally:
        for beat in (holder, waiting):
            if beat:
                beat.stop()


def test_a_beat_whose_lock_is_gone_takes_it_again(beats, redis_url):
    """Redis answers, but without the lock (lost with Redis's data): the beat waits for it as a second beat does."""
    beat = beats[-1]
    acquired = beat.output.count("beat: Acquired lock")
    redis.Redis.from_url(redis_url).delete("redbeat::lock")
    beat.wait_for_output("beat: the lock is no longer this beat's: waiting for it, as a second beat does", timeout=10)
    wait_for(lambda: beat.output.count("beat: Acquired lock") > acquired, 10, "the lock taken again")
    sent = beat.output.count("Sending due task check-email-service")
    wait_for(lambda: beat.output.count("Sending due task check-email-service") > sent, 10, "a check sent")


def test_the_page_shows_the_health_and_its_age(page, web, beats, workers, stand_in):
    page.goto(f"{web}/form_ws")
    service = page.locator("#service")
    expect(service).to_have_text(re.compile(r"^up, checked \d+ s ago$"), timeout=10_000)
    expect(service).to_have_class("up")
    stand_in.stop()
    expect(service).to_have_text(re.compile(r"^down, checked \d+ s ago \(ConnectionError: "), timeout=10_000)
    expect(service).to_have_class("down")
    stand_in.start()
    expect(service).to_have_text(re.compile(r"^up, checked \d+ s ago$"), timeout=10_000)


def test_the_page_shows_a_failed_subscription_sent_again_by_the_sweep(page, web, main, beats, workers, stand_in):
    page.goto(f"{web}/form_ws")
    service, states = page.locator("#service"), page.locator("#states")
    expect(service).to_have_text(re.compile(r"^up, "), timeout=10_000)
    stand_in.stop()
    page.fill("#one input[name=email]", address())
    page.click("#one button")
    expect(states).to_contain_text("FAILURE (retries: 3): ConnectionError: ", timeout=20_000)
    stand_in.start()
    expect(service).to_have_text(re.compile(r"^up, "), timeout=10_000)
    main.celery.send_task("periodic.resend_failed")  # as beat sends it, at the start of each minute
    expect(states).to_contain_text("sent again by the sweep, under the same task id", timeout=15_000)
    expect(states).to_contain_text("SUCCESS (retries: 0)", timeout=10_000)


def test_chapter_6s_websocket_still_pushes_every_state(web, workers, stand_in):
    email = address()
    task_id = httpx2.post(f"{web}/subscribe", json={"email": email}).json()["task_id"]
    with connect(f"ws{web.removeprefix('http')}/ws/task_status/{task_id}", open_timeout=10) as socket:
        states = [message for message in socket]
    assert '"state":"SUCCESS"' in states[-1] and email in states[-1]


def test_chapter_3s_divide_and_chapter_6s_import_still_run(web, workers, stand_in):
    divided, imported = earlier_tasks_results(web)
    assert (divided, imported["subscribed"], len(imported["failed"])) == (0.25, 1, 1)


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_no_request_gets_a_server_error(api_schema):
    assert no_request_gets_a_server_error(api_schema)


def test_run_all_runs_beat_with_the_rest(stack, redis_url):
    # a database of its own: on the module's, the module's beat holds the lock, and this one would wait
    ch07 = stack("7", REDIS_URL=redis_url.rsplit("/", 1)[0] + "/2", HEALTH_CHECK_INTERVAL="1")
    ch07.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert re.search(r"\n    beat +   sends the periodic tasks", ch07.process.output)  # the banner lists it
    wait_for(lambda: "beat: Acquired lock" in "".join(ch07.lines_of("beat")), 10, "beat to take the lock")
    wait_for(lambda: "Sending due task check-email-service" in "".join(ch07.lines_of("beat")), 10, "a check sent")
    assert ch07.ctrl_c() == 130  # and every process it started has exited, beat too
