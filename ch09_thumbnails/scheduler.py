"""RedBeat's scheduler, made to wait for Redis where RedBeat's own would exit (see README, "When Redis goes away")."""

from celery.utils.log import get_logger
from redbeat import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError

logger = get_logger("celery.beat")


class PatientRedBeatScheduler(RedBeatScheduler):
    def tick(self, **kwargs):
        try:
            return super().tick(**kwargs)
        except RedisConnectionError as exc:
            logger.warning("beat: Redis is unreachable (%s): trying again in 1 s", exc)
            return 1
        except LockNotOwnedError:  # Redis is back without this beat's lock: it lapsed, or Redis lost its data
            logger.warning("beat: the lock lapsed while Redis was away: waiting for it, as a second beat does")
            self.lock.acquire()  # whichever beat holds it now sends meanwhile
            logger.info("beat: Acquired lock")
            self.setup_schedule()  # the entries again, should Redis have lost them too; their last runs are kept
            return 0

    def close(self):
        try:
            super().close()  # lets go of the lock
        except RedisConnectionError:  # stopped while Redis is away: the lock lapses by itself, in 30 s
            pass
