"""POST /users stores a user, then sends its subscription task; GET /users/{id} shows the user and the task's state;
GET /users lists the latest users.

The order is the point: the task is sent once the user is committed, with the user's id
(ch08_database/README.md, "Commit, then send").
"""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import get_session
from errors import BAD_BODY_RESPONSES
from models import User
from schemas import NewUser
from status import status_json
from tasks import subscribe_user

users_router = APIRouter()
DB = Annotated[Session, Depends(get_session)]
UNAVAILABLE = {503: {"description": "The database or Redis is unavailable"}}
UserId = Annotated[int, Path(ge=1, lt=2**31)]  # an id the database's INTEGER can hold


@users_router.post(
    "/users",
    status_code=201,
    responses={409: {"description": "The email is taken"}, **BAD_BODY_RESPONSES, **UNAVAILABLE},
)
def create_user(new_user: NewUser, session: DB):
    user = User(email=new_user.email, name=new_user.name, task_id=str(uuid.uuid4()))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # The database's unique index decided: two requests at once for one address cannot both pass it
        raise HTTPException(409, f"a user with the email {new_user.email} exists already") from None
    # Sent once the user is committed, with its id: the task finds the user
    # (ch08_database/README.md, "Commit, then send")
    subscribe_user.apply_async([user.id], task_id=user.task_id)
    return {"id": user.id, "task_id": user.task_id}


def as_utc(moment: datetime | None):
    """SQLite keeps no time zone, so a time read from it is naive: it is UTC, as models.py and tasks.py write it."""
    return moment and (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC))


def user_json(user: User):
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "created_at": as_utc(user.created_at),
        "subscribed_at": as_utc(user.subscribed_at),
        "thumbnail_url": user.thumbnail_url,
    }


@users_router.get("/users", responses=UNAVAILABLE)
def list_users(session: DB):
    """The latest 100 users, the newest first; each one's task is in GET /users/{id}."""
    return [user_json(user) for user in session.scalars(select(User).order_by(User.id.desc()).limit(100))]


@users_router.get("/users/{user_id}", responses={404: {"description": "No such user"}, **UNAVAILABLE})
def get_user(user_id: UserId, request: Request, session: DB):
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    meta = request.app.state.celery.backend.get_task_meta(user.task_id)
    # The task ended between the two reads: its subscribed_at is committed now, read it again
    if meta["status"] == "SUCCESS" and user.subscribed_at is None:
        session.refresh(user)
    return {**user_json(user), "task": status_json(user.task_id, meta)}
