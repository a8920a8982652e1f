"""The chapter's app with three more routes, each doing part of what POST /divide does, to see where its time goes."""

from main import Numbers, app, divide


@app.post("/validate")
async def validate(numbers: Numbers):  # the request and its validation: no thread, no task
    return {"task_id": "none"}


@app.post("/validate_in_thread")
def validate_in_thread(numbers: Numbers):  # the same, run in the thread pool as POST /divide is
    return {"task_id": "none"}


@app.post("/divide_on_loop")
async def divide_on_loop(numbers: Numbers):  # the task sent from the event loop itself: no thread, but it blocks
    return {"task_id": divide.delay(numbers.x, numbers.y).id}
