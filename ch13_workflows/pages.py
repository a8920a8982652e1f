"""The pages, each an HTML file of this folder served as it is, outside the API's schema: chapter 7's (a task's every
state, the email service's health), chapter 9's (an avatar's upload) and this chapter's (an export)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

pages_router = APIRouter()


@pages_router.get("/form_ws", include_in_schema=False)
def form_ws():
    return FileResponse(Path(__file__).with_name("form_ws.html"))


@pages_router.get("/form_avatar", include_in_schema=False)
def form_avatar():
    return FileResponse(Path(__file__).with_name("form_avatar.html"))


@pages_router.get("/form_export", include_in_schema=False)
def form_export():
    """Its progress, pushed, its file, and a cancel."""
    return FileResponse(Path(__file__).with_name("form_export.html"))
