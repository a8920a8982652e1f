"""A stand-in for a third-party email-marketing API: slow, failing on demand, and taking so many calls a second.

POST /subscribe {"email": ...} answers after THIRD_PARTY_DELAY seconds (default 5, like httpbin's /delay/5), failures
included: 200 {"subscribed": email}, except 503 for the first N calls of an address ending in +failN, and for every
call of an address ending in +down; 422 for an address ending in +invalid, the service refusing it. Over
THIRD_PARTY_LIMIT calls in one second (default 10), it answers 429 at once. GET /stats counts the calls of each second
and the refused ones; DELETE /stats starts the count again. GET /health answers 200 {"status": "ok"} at once.

Run: uvicorn third_party:app --port 8010
"""

import asyncio
import os
import re
import time
from collections import Counter

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

DELAY = float(os.environ.get("THIRD_PARTY_DELAY", 5))
LIMIT = int(os.environ.get("THIRD_PARTY_LIMIT", 10))

app = FastAPI(title="Email marketing (a stand-in)")
# The calls made for each address since this process started
calls = Counter()
seconds = Counter()  # calls received in each second of the clock (refused ones too), since the count started
refused = Counter()  # calls refused as over the limit, in each second


class Subscriber(BaseModel):
    email: str


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/stats")
async def stats():
    busiest = max(seconds.values(), default=0)
    return {"limit": LIMIT, "calls": seconds.total(), "refused": refused.total(), "busiest_second": busiest}


@app.delete("/stats")
async def clear_stats():
    seconds.clear()
    refused.clear()
    return await stats()


@app.post("/subscribe")
async def subscribe(subscriber: Subscriber):
    email, second = subscriber.email, int(time.time())
    seconds[second] += 1
    if seconds[second] > LIMIT:
        refused[second] += 1
        print(f"{email}: 429 over the limit, call {seconds[second]} of this second", flush=True)
        return JSONResponse({"detail": f"over {LIMIT} calls a second"}, status_code=429)
    calls[email] += 1
    call = calls[email]
    await asyncio.sleep(DELAY)
    local_part = email.rpartition("@")[0]
    fail = re.search(r"\+fail(\d+)$", local_part)
    down = local_part.endswith("+down") or (fail is not None and call <= int(fail[1]))
    if local_part.endswith("+invalid"):
        print(f"{email}, call {call}: 422 refused", flush=True)
        return JSONResponse({"detail": f"{email} is not an address this service accepts"}, status_code=422)
    print(f"{email}, call {call}: {'503 unavailable' if down else '200 subscribed'}", flush=True)
    if down:
        return JSONResponse({"detail": f"unavailable for {email}, call {call}"}, status_code=503)
    return {"subscribed": email}
