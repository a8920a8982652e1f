"""The tables, as typed SQLAlchemy 2 models. Alembic's migrations (migrations/versions/) create them."""

from datetime import UTC, datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from database import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))
    subscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None until the service said yes
    task_id: Mapped[str] = mapped_column(String(36))  # the subscription task, whose state GET /users/{id} shows
    # The latest upload's name, recorded as it is accepted: its task alone may set thumbnail_url
    avatar_upload: Mapped[str | None] = mapped_column(String(32))
    thumbnail_url: Mapped[str | None] = mapped_column(String(200))  # /media/thumbnails/...: None until one is made
