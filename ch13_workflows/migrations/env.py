"""Alembic's environment: the app's engine (DATABASE_URL, with SQLite's settings) and the tables of its models.

Its lines are logged as the web app's, which it runs before (logs.py), not as alembic.ini would have them.
"""

from alembic import context

import models  # noqa: F401 (every model's table, in Base.metadata)
from database import Base, engine
from logs import configure_logging

configure_logging()

with engine.connect() as connection:
    # SQLite changes a column by copying its table: batch mode writes migrations that do so
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
