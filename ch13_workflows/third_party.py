"""A stand-in for a third-party email-marketing API: slow, and failing on demand.

POST /subscribe {"email": ...} answers after THIRD_PARTY_DELAY seconds (default 5, like httpbin's /delay/5), failures
included: 200 {"subscribed": email}, except 503 for the first N calls of an address ending in +failN, and for every
call of an address ending in +down. GET /health answers 200 {"status": "ok"} at once, while the service runs.

Run: uvicorn third_party:app --port 8010
"""

import asyncio
import os
import re
from collections import Counter

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

DELAY = float(os.environ.get("THIRD_PARTY_DELAY", 5))

app = FastAPI(title="Email marketing (a stand-in)")
# The calls made for each address since this process started
calls = Counter()


class Subscriber(BaseModel):
    email: str


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/subscribe")
async def subscribe(subscriber: Subscriber):
    email = subscriber.email
    calls[email] += 1
    call = calls[email]
    await asyncio.sleep(DELAY)
    local_part = email.rpartition("@")[0]
    fail = re.search(r"\+fail(\d+)$", local_part)
    down = local_part.endswith("+down") or (fail is not None and call <= int(fail[1]))
    print(f"{email}, call {call}: {'503 unavailable' if down else '200 subscribed'}", flush=True)
    if down:
        return JSONResponse({"detail": f"unavailable for {email}, call {call}"}, status_code=503)
    return {"subscribed": email}
