"""RedBeat's scheduler, made to wait for Redis where RedBeat's own would exit.

See ch07_periodic/README.md, "When Redis goes away".

Every beat waits out Redis the same way, the one holding the lock as the ones waiting for it: each call to Redis that
fails for want of it is made again a second later, for as long as it takes.
"""

import time

from celery.signals import beat_init
from celery.utils.log import get_logger
from redbeat import RedBeatScheduler
from redbeat.schedulers import acquire_distributed_beat_lock
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError

logger = get_logger("celery.beat")


def patiently(call, *args):
    """call(*args), made again every second while Redis is unreachable; what it returns."""
    while True:
        try:
            return call(*args)
        except RedisConnectionError as exc:
            logger.warning("beat: Redis is unreachable (%s): trying again in 1 s", exc)
            time.sleep(1)


class PatientRedBeatScheduler(RedBeatScheduler):
    def setup_schedule(self):
        patiently(super().setup_schedule)  # at start-up: beat may start before Redis does

    def tick(self, **kwargs):
        try:
            return super().tick(**kwargs)
        except RedisConnectionError as exc:
            logger.warning("beat: Redis is unreachable (%s): trying again in 1 s", exc)
            return 1
        except LockNotOwnedError:
            # Redis answers, but the lock is no longer this beat's: it lapsed while Redis was away, or Redis lost it
            logger.warning("beat: the lock is no longer this beat's: waiting for it, as a second beat does")
            # Whichever beat holds it now sends meanwhile
            patiently(self.lock.acquire)
            logger.info("beat: Acquired lock")
            # The entries again, should Redis have lost them too; their last runs are kept
            self.setup_schedule()
            return 0

    def close(self):
        try:
            super().close()  # lets go of the lock
        except RedisConnectionError:  # stopped while Redis is away: the lock lapses by itself, in 30 s
            pass


# RedBeat takes the lock as beat starts, in a handler of beat_init that gives up, leaving no lock, when Redis goes
# away while it waits for the lock; beat then exits at its first tick. This handler takes its place, and waits.
# RedBeat has no setting to replace it (nor documents the handler): it is disconnected by the name RedBeat gives it.
beat_init.disconnect(acquire_distributed_beat_lock)


@beat_init.connect
def wait_for_the_lock(sender, **kwargs):
    if isinstance(sender.scheduler, PatientRedBeatScheduler):
        patiently(acquire_distributed_beat_lock, sender)
