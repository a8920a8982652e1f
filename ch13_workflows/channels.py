"""The web process's one Redis subscriber, shared by every WebSocket
(ch06_websocket/README.md, "One Redis connection for every socket").

A channel is subscribed when its first watcher comes and unsubscribed when its last goes; each watcher reads a
queue of its own, bounded, so a slow client holds up no other.
"""

import asyncio
from collections import deque
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# States a socket may have waiting to be sent; a client further behind is told so (queue.behind)
QUEUE_SIZE = 100


class Channels:
    """The one subscriber of the process: a channel is subscribed when its first watcher comes and unsubscribed
    when its last goes; each watcher has a queue of its own. When Redis goes, every watcher gets the error, and the
    subscriber connects again, with a back-off, until Redis is back."""

    def __init__(self, url):
        # No retry of its own: a lost connection must be seen, or the states published meanwhile would be lost
        self.redis = Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        self.watchers = {}  # channel -> the queues of its watchers
        self.confirmed = {}  # channel -> a future, done once Redis confirmed the subscription
        self.replies = {}  # channel -> the futures of the (un)subscriptions Redis has yet to confirm, in order
        self.connected = asyncio.get_running_loop().create_future()
        self.sockets = 0
        self.reading = asyncio.create_task(self.read())

    async def read(self):
        backoff = ExponentialBackoff(cap=5, base=0.25)
        failures = 0
        while True:
            self.pubsub = self.redis.pubsub()
            try:
                await self.pubsub.connect()
                await self.pubsub.ping()
                self.connection_is(None)
                failures = 0
                while True:
                    self.dispatch(await self.pubsub.get_message(timeout=None))
            except (RedisConnectionError, OSError) as exc:
                self.connection_is(exc)
                await self.pubsub.aclose()
                failures += 1
                await asyncio.sleep(backoff.compute(failures))

    def connection_is(self, error):
        if self.connected.done():
            self.connected = asyncio.get_running_loop().create_future()
        if error is None:
            return self.connected.set_result(None)
        self.connected.set_exception(error)
        # marked as seen: when no socket waits for it, asyncio would otherwise log it as never retrieved
        self.connected.exception()
        for queues in self.watchers.values():
            for queue in queues:
                queue.put_nowait(error)
        for future in self.confirmed.values():
            if not future.done():
                future.set_exception(error)
        self.watchers, self.confirmed, self.replies = {}, {}, {}

    def dispatch(self, message):
        if message is None or message["type"] == "pong":
            return
        channel = message["channel"]
        if message["type"] in ("subscribe", "unsubscribe"):
            replies = self.replies.get(channel)
            future = replies.popleft() if replies else None
            if replies is not None and not replies:
                del self.replies[channel]
            if future and not future.done():
                future.set_result(None)
            return
        for queue in list(self.watchers.get(channel, ())):
            if queue.qsize() < QUEUE_SIZE:
                queue.put_nowait(message["data"])
            else:
                self.watchers[channel].discard(queue)
                queue.behind.set_result(None)

    @asynccontextmanager
    async def watch(self, channel):
        """A queue of whatever is published on channel from the moment this returns it; queue.behind is done
        when it holds QUEUE_SIZE messages and one more comes."""
        await asyncio.shield(self.connected)
        queue = asyncio.Queue()
        queue.behind = asyncio.get_running_loop().create_future()
        queues = self.watchers.setdefault(channel, set())
        queues.add(queue)
        try:
            if len(queues) == 1:
                self.confirmed[channel] = asyncio.get_running_loop().create_future()
                self.replies.setdefault(channel, deque()).append(self.confirmed[channel])
                await self.pubsub.subscribe(channel)
            await asyncio.shield(self.confirmed[channel])
            yield queue
        finally:
            queues.discard(queue)
            if not queues and self.watchers.get(channel) is queues:
                del self.watchers[channel], self.confirmed[channel]
                self.replies.setdefault(channel, deque()).append(None)
                try:
                    await self.pubsub.unsubscribe(channel)
                except (RedisConnectionError, OSError):
                    pass  # the subscriber reads the same error, and starts again with nothing subscribed

    async def aclose(self):
        self.reading.cancel()
        await asyncio.gather(self.reading, return_exceptions=True)
        await self.pubsub.aclose()
        await self.redis.aclose()
