"""The database: migrated as you migrate it, and empty at the start of every test.

ch10_testing/README.md, "The database, clean for every test".

SQLite in the run's own folder, or PostgreSQL: DATABASE_URL=postgresql+psycopg://user@host/name pytest makes a
database of its own on that server, and drops it at the end.
"""

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from database import Session
from models import User


def test_the_migrations_are_applied_up_to_the_last(migrated):
    """Logged as the app logs (logs.py): each message after its time, level and process."""
    assert [line.split("] ", 1)[1] for line in migrated.splitlines()[-2:]] == [
        "Running upgrade  -> 0001, users: the table of models.User.",
        "Running upgrade 0001 -> 0002, users: avatar_upload and thumbnail_url, the latest upload and its thumbnail.",
    ]


def test_the_models_match_the_migrations(alembic):
    """`alembic check`: the database is at the last migration, and a column added to a model without a migration
    fails here, not in production."""
    assert alembic("check").splitlines()[-1] == "No new upgrade operations detected."


@pytest.mark.parametrize("run", ["first", "second"])
def test_every_test_starts_with_no_users(run):
    """Twice, the same address: the second run passes only because the first one's row is gone."""
    with Session.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
        session.add(User(email="ann@example.com", name="Ann", task_id=f"task-{run}"))


def test_an_address_is_taken_once(user):
    """The unique index decides, in the database: POST /users answers 409 from this error."""
    with pytest.raises(IntegrityError), Session.begin() as session:
        session.add(User(email=user.email, name="Ann again", task_id="another"))
