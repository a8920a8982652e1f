"""A chapter's web app, worker and email-service stand-in on a Redis of one test's own, for the pages' outage tests:
the web app can be stopped and started again on the same port."""

from helpers import url_answers
from processes import Process, free_port, wait_for


class ByHand:
    """The processes a reader starts by hand, one terminal each (not run_all.sh, whose stack is stacks.Stack)."""

    def __init__(self, chapter, env, redis_url):
        service = f"http://127.0.0.1:{free_port()}"
        self.chapter, self.port = chapter, free_port()
        self.env = env | {
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "THIRD_PARTY_URL": service,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Process(["uvicorn", "third_party:app", "--port", service.rsplit(":", 1)[1]], chapter, self.env)
        self.worker = Process(["celery", "-A", "main.celery", "worker", "--loglevel=info"], chapter, self.env)
        self.start_web()
        self.worker.wait_for_output(" ready.", timeout=30)
        wait_for(lambda: url_answers(f"{service}/openapi.json"), 30, "the stand-in")

    def start_web(self):
        self.web = Process(["uvicorn", "main:app", "--port", str(self.port)], self.chapter, self.env)
        wait_for(lambda: url_answers(f"{self.url}/"), 30, "the web app")

    def stop(self):
        for process in (self.web, self.worker, self.service):
            process.stop()
