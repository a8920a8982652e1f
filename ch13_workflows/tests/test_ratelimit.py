"""The email service's rate, kept by every worker together: a token bucket in Redis (README: "Rate limits")."""

import logging
import time
import uuid

import redis

import email_service as client
from email_service import THIRD_PARTY_URL
from ratelimit import take_token
from tasks import subscribe


def test_the_bucket_gives_its_rate_and_says_when_the_next_token_comes(redis_url):
    bucket, taken = f"bucket-{uuid.uuid4().hex}", 0
    with redis.Redis.from_url(redis_url) as server:
        assert take_token(server, bucket, 10) == 0  # the first token, at once
        assert 0 < take_token(server, bucket, 10) <= 0.1  # the next one, within a tenth of a second
        started = time.monotonic()
        while time.monotonic() - started < 1:
            wait = take_token(server, bucket, 10)
            taken += wait == 0
            time.sleep(wait)
    assert 9 <= taken <= 11  # 10 a second, give or take the token at each end


def test_a_task_with_no_token_retries_and_does_not_count_it(worker, email_service, monkeypatch, caplog):
    """One call a second: of two subscriptions sent at once, one waits for the next token."""
    monkeypatch.setattr(client, "RATE", 1)
    for email in ("ann@example.com", "bob@example.com"):
        email_service.post(f"{THIRD_PARTY_URL}/subscribe", json={"subscribed": email})
    caplog.set_level(logging.INFO, "celery")
    results = [subscribe.delay(email) for email in ("ann@example.com", "bob@example.com")]
    assert [result.get(timeout=15)["subscribed"] for result in results] == ["ann@example.com", "bob@example.com"]
    assert [result.retries for result in results] == [0, 0]
    assert "RateLimited('the email service takes 1 calls a second: the next in " in caplog.text
