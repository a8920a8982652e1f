"""Alembic's environment: the app's engine (DATABASE_URL, with SQLite's settings) and the tables of its models."""

from logging.config import fileConfig

from alembic import context

import models  # noqa: F401 (every model's table, in Base.metadata)
from database import Base, engine

if context.config.config_file_name:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

with engine.connect() as connection:
    # SQLite changes a column by copying its table: batch mode writes migrations that do so
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
