"""The web process's one Redis subscriber, shared by every WebSocket
(ch06_websocket/README.md, "One Redis connection for every socket").

A channel is subscribed when its first watcher comes and unsubscribed when its last goes. Each message is encoded once
for all the watchers of its channel, then handed to each: a watcher holds what its socket has yet to send, bounded, so a
slow client holds up no other.
"""

import asyncio
from collections import deque
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# States a socket may have waiting to be sent; a client further behind is told so (Watcher.behind)
QUEUE_SIZE = 100


class Watcher:
    """What one socket has yet to send, in order: the subscriber appends each message (put), already encoded, and the
    socket's own coroutine takes them out (get). A deque and one future, which is made and woken only while the
    socket's coroutine waits for something to send: lighter than an asyncio.Queue per socket, and the burst of a state
    with thousands of watchers is one append and at most one wake-up each."""

    def __init__(self):
        self.unsent = deque()
        self.waiting = None  # a future while the socket's coroutine has nothing to send
        # Done when QUEUE_SIZE messages wait and one more comes
        self.behind = asyncio.get_running_loop().create_future()

    def put(self, message):
        """Called by the subscriber: False when the socket is too far behind to take it (and behind is done)."""
        if len(self.unsent) >= QUEUE_SIZE:
            if not self.behind.done():
                self.behind.set_result(None)
            return False
        self.unsent.append(message)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)
        return True

    def fail(self, error):
        """The subscription ended with error: raised by get() once the messages before it are taken."""
        self.unsent.append(error)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    async def get(self):
        while not self.unsent:
            self.waiting = asyncio.get_running_loop().create_future()
            await self.waiting
        message = self.unsent.popleft()
        if isinstance(message, Exception):
            raise message
        return message


class Channels:
    """The one subscriber of the process: a channel is subscribed when its first watcher comes and unsubscribed
    when its last goes. When Redis goes, every watcher gets the error, and the subscriber connects again, with a
    back-off, until Redis is back."""

    def __init__(self, url):
        # No retry of its own: a lost connection must be seen, or the states published meanwhile would be lost
        self.redis = Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        self.watchers = {}  # channel -> its watchers
        self.encoders = {}  # channel -> the function that makes a message of what is published there
        self.confirmed = {}  # channel -> a future, done once Redis confirmed the subscription
        self.replies = {}  # channel -> the futures of the (un)subscriptions Redis has yet to confirm, in order
        self.connected = asyncio.get_running_loop().create_future()
        self.try_now = asyncio.get_running_loop().create_future()
        self.sockets = 0
        self.reading = asyncio.create_task(self.read())

    async def read(self):
        backoff = ExponentialBackoff(cap=5, base=0.25)
        failures = 0
        while True:
            # A future for this attempt's outcome, which the sockets that come meanwhile wait for
            if self.connected.done():
                self.connected = asyncio.get_running_loop().create_future()
            self.pubsub = self.redis.pubsub()
            try:
                await self.pubsub.connect()
                await self.pubsub.ping()
                self.connection_is(None)
                failures = 0
                while True:
                    self.dispatch(await self.pubsub.get_message(timeout=None))
            except (RedisConnectionError, OSError) as exc:
                # The back-off is cut short by a socket that comes meanwhile (watch): Redis may be back already
                self.try_now = asyncio.get_running_loop().create_future()
                self.connection_is(exc)
                await self.pubsub.aclose()
                failures += 1
                await asyncio.wait({self.try_now}, timeout=backoff.compute(failures))

    def connection_is(self, error):
        if self.connected.done():
            self.connected = asyncio.get_running_loop().create_future()
        if error is None:
            return self.connected.set_result(None)
        self.connected.set_exception(error)
        # marked as seen: when no socket waits for it, asyncio would otherwise log it as never retrieved
        self.connected.exception()
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.fail(error)
        for future in self.confirmed.values():
            if not future.done():
                future.set_exception(error)
        self.watchers, self.encoders, self.confirmed, self.replies = {}, {}, {}, {}

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
        watchers = self.watchers.get(channel)
        if not watchers:
            return
        # Encoded once, for every watcher of the channel, not once per socket
        try:
            encoded = self.encoders[channel](message["data"])
        except Exception as error:  # a message the encoder cannot read: each socket raises it, and is closed with 1011
            for watcher in watchers:
                watcher.fail(error)
            return
        behind = [watcher for watcher in watchers if not watcher.put(encoded)]
        watchers.difference_update(behind)

    @asynccontextmanager
    async def watch(self, channel, encode):
        """A Watcher of whatever is published on channel from the moment this returns it, each message as
        encode(data) makes it; its behind future is done when it holds QUEUE_SIZE messages and one more comes."""
        if self.connected.done() and self.connected.exception():
            # Redis was away at the last attempt: the subscriber tries again now, and this socket waits for that
            # attempt, not the last one's error (a socket opened just after Redis came back gets its state)
            self.connected = asyncio.get_running_loop().create_future()
            if not self.try_now.done():
                self.try_now.set_result(None)
        await asyncio.shield(self.connected)
        watcher = Watcher()
        watchers = self.watchers.setdefault(channel, set())
        watchers.add(watcher)
        try:
            if len(watchers) == 1:
                self.encoders[channel] = encode
                self.confirmed[channel] = asyncio.get_running_loop().create_future()
                self.replies.setdefault(channel, deque()).append(self.confirmed[channel])
                await self.pubsub.subscribe(channel)
            await asyncio.shield(self.confirmed[channel])
            yield watcher
        finally:
            watchers.discard(watcher)
            if not watchers and self.watchers.get(channel) is watchers:
                del self.watchers[channel], self.encoders[channel], self.confirmed[channel]
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
