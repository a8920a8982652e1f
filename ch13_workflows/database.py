"""The database: one engine per process, a session per request (get_session) and per task (Session()).

SQLite gets WAL mode and a busy timeout, so that the web app and the workers write side by side; a worker's
processes each open connections of their own.
See ch08_database/README.md, "Two writers on SQLite", "A connection per process".
"""

from celery.signals import worker_process_init
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker

from config import get_settings

BUSY_TIMEOUT = 1  # seconds SQLite waits for another connection's write lock: then the API answers 503


class Base(DeclarativeBase):
    # constraints with names, so that a later migration can drop or change one by its name
    metadata = MetaData(naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"})


def create_db_engine(url):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT})
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    # PostgreSQL: a connection the server dropped is replaced unseen; an unreachable server is given 2 s, libpq's least
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 2})


def sqlite_pragmas(connection, record):
    connection.execute("PRAGMA journal_mode=WAL")  # readers and the one writer do not wait for each other
    connection.execute("PRAGMA synchronous=NORMAL")  # WAL's safe setting: a commit is not synced to disk each time


engine = create_db_engine(get_settings().DATABASE_URL)
Session = sessionmaker(engine, expire_on_commit=False)  # a user's columns stay readable after the commit


def get_session():
    with Session() as session:
        yield session


@worker_process_init.connect
def new_connections_after_fork(**kwargs):
    """In each pool process of a worker, after the fork: a pool of its own; the parent's connections stay its own."""
    engine.dispose(close=False)


def unavailable(exc):
    """What an OperationalError (unreachable, locked) or a TimeoutError (no connection free in time) says, in a line:
    the driver's own words, without SQLAlchemy's notes."""
    return f"The database is unavailable: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}"
