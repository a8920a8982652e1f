"""Users for an export to export, written straight into the database: no subscription task is sent for them.

Usage: python seed.py 5000     (inside this folder, once `alembic upgrade head` has made the tables)

They are marked subscribed already, so that chapter 7's sweep never sends their subscriptions again.
"""

import sys
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from database import Session
from models import User


def seed(count):
    """Add `count` users, user-1a2b3c4d-1@example.com and so on; the number of users there are now."""
    now, batch = datetime.now(UTC), uuid.uuid4().hex[:8]
    rows = [
        {
            "email": f"user-{batch}-{n}@example.com",
            "name": f"User {n}",
            "created_at": now,
            "subscribed_at": now,
            "task_id": str(uuid.uuid4()),
        }
        for n in range(1, count + 1)
    ]
    with Session.begin() as session:
        session.execute(insert(User), rows)
        return session.scalar(select(func.count()).select_from(User))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    print(f"{int(sys.argv[1])} users added; {seed(int(sys.argv[1]))} in all")
