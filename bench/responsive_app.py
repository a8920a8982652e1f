"""Chapter 5's app with the anti-pattern the chapter starts from: the third-party call made inside the request."""

from main import Subscriber, app
from tasks import call_third_party


@app.post("/subscribe_in_request")
def subscribe_in_request(subscriber: Subscriber):  # a thread of the pool waits for the service
    return call_third_party(subscriber.email)


@app.post("/subscribe_in_request_async")
async def subscribe_in_request_async(subscriber: Subscriber):  # the event loop itself waits for the service
    return call_third_party(subscriber.email)
