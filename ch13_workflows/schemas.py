"""What the API takes: the bodies of its POST routes, as Pydantic models (their JSON Schema is in /openapi.json)."""

from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import BaseModel, ConfigDict, EmailStr, Field, FiniteFloat, WithJsonSchema


class Numbers(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: not "5", not true
    x: FiniteFloat
    y: FiniteFloat


# email-validator refuses an address at a special-use domain (.test, .local, ...), in any letter case; the schema says
# so, and a client that follows it is never refused: see ch05_retry/README.md, "Bad input".
SPECIAL_USE = "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in SPECIAL_USE_DOMAIN_NAMES)
Email = Annotated[
    EmailStr, WithJsonSchema({"type": "string", "format": "email", "pattern": rf"^(?!.*\.({SPECIAL_USE})$)"})
]


class Subscriber(BaseModel):
    email: Email


class MailingList(BaseModel):
    # The addresses are called all at once, so that a list takes the time of one call, well within the time limit.
    emails: list[Email] = Field(min_length=1, max_length=10)


class NewUser(BaseModel):
    email: Email
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]*$")  # PostgreSQL's text cannot hold a NUL


class ExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is a 422, not silently the default
    chunk_size: int = Field(500, ge=50, le=10_000, description="users a chunk task writes")
