"""A chapter's web app, worker and email-service stand-in on a Redis of one test's own, for the pages' outage tests:
the web app can be stopped and started again on the same port."""

from helpers import on_redis
from processes import Terminals, free_port


class ByHand(Terminals):
    """The Procfile's stand-in, worker and web app, one terminal each, as a reader starts them (not run_all.sh,
    whose stack is stacks.Stack); .web can be stopped, and start_web() starts it again on the same port."""

    def __init__(self, chapter, env, redis_url):
        super().__init__(chapter, on_redis(env, redis_url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        starting = [self.line("third_party", wait=False), self.line("worker", wait=False)]
        self.start_web()
        for process in starting:
            self.ready(process)

    def start_web(self):
        self.web = self.line("web", port=self.port)
