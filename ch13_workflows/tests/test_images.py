"""Avatars, with images made in the test by Pillow: the upload view with make_thumbnail's delay() replaced, chapter 9's
bad inputs, and the task called as a function, the last upload winning
(ch10_testing/README.md, "Images, made in the test").
"""

import io
import uuid
from unittest.mock import Mock

import pytest
from celery.result import AsyncResult
from PIL import Image
from sqlalchemy import update

from database import Session
from images import THUMBNAILS, UPLOADS, BadImage, make_thumbnail
from main import celery
from models import User
from pictures import blank_png, damaged_png, decompression_bomb, image, portrait_photo, truncated_jpeg

BOMB = "Image size (100000000 pixels) exceeds limit of 89478485 pixels, could be decompression bomb DOS attack."


@pytest.fixture
def delay(monkeypatch):
    """make_thumbnail's delay(), replaced: what the view sends is recorded, and nothing is sent."""
    sent = Mock(return_value=AsyncResult("the-task-id"))
    monkeypatch.setattr(make_thumbnail, "delay", sent)
    return sent


def uploads():
    return set(UPLOADS.iterdir())


def test_an_upload_is_stored_under_a_name_of_the_servers_and_sent_by_name(client, user, delay):
    kept = uploads()
    answer = client.post(f"/users/{user.id}/avatar", files={"file": ("../../photo.jpg", image())})
    assert (answer.status_code, answer.json()) == (202, {"task_id": "the-task-id"})
    (stored,) = uploads() - kept
    delay.assert_called_once_with(user.id, stored.name)  # a name, never the bytes, never a path
    assert len(stored.name) == 32 and stored.read_bytes() == image()


@pytest.mark.parametrize(
    "data, detail",
    [
        (damaged_png(), "the image cannot be read: broken PNG file (bad header checksum in b'IDAT')"),
        (b"Hello, world", "not an image of a format read here: JPEG, PNG, GIF, WEBP"),
        (b"", "the file is empty"),
        (image("PNG")[:300], "the image cannot be read: Truncated File Read"),
        (image("BMP"), "not an image of a format read here: JPEG, PNG, GIF, WEBP"),
        (blank_png((4000, 4000)), "4000 x 4000 pixels: a PNG avatar may have 12,500,000 at most"),
        (decompression_bomb(), BOMB),
    ],
    ids=[
        "a damaged PNG",
        "not an image",
        "empty",
        "a truncated PNG",
        "a BMP",
        "too many pixels",
        "a decompression bomb",
    ],
)
def test_a_bad_file_is_a_422_is_not_kept_and_sends_nothing(client, user, delay, data, detail):
    kept = uploads()
    refused = client.post(f"/users/{user.id}/avatar", files={"file": ("photo.jpg", data)})
    assert (refused.status_code, refused.json()) == (422, {"detail": detail})
    assert uploads() == kept
    delay.assert_not_called()


def test_no_such_user_is_a_404(client, delay):
    missing = client.post("/users/2147483647/avatar", files={"file": ("photo.jpg", image())})
    assert (missing.status_code, missing.json()) == (404, {"detail": "no user 2147483647"})


def upload(data, user=None):
    """A file in the uploads folder, as the view leaves it, recorded as the user's latest upload if a user is given;
    its name."""
    UPLOADS.mkdir(parents=True, exist_ok=True)
    path = UPLOADS / uuid.uuid4().hex
    path.write_bytes(data)
    if user is not None:
        with Session.begin() as session:
            session.execute(update(User).where(User.id == user.id).values(avatar_upload=path.name))
    return path.name


def thumbnail_file(done):
    return THUMBNAILS / done["thumbnail_url"].removeprefix("/media/thumbnails/")


def test_the_task_makes_a_thumbnail_and_records_it(user):
    done = make_thumbnail(user.id, upload(image(size=(640, 480)), user))
    assert done == {"thumbnail_url": done["thumbnail_url"], "width": 128, "height": 96}
    thumbnail = Image.open(thumbnail_file(done))
    assert (thumbnail.format, thumbnail.size) == ("PNG", (128, 96))
    assert thumbnail_url(user) == done["thumbnail_url"]


def thumbnail_url(user):
    with Session() as session:
        return session.get(User, user.id).thumbnail_url


def test_the_last_upload_wins_whichever_task_ends_first(user):
    """Two uploads, the second one's task run first: the first one's ends superseded, and its files go; a third
    upload's thumbnail then replaces the second one's, whose files go too."""
    first, second = upload(image(), user), upload(portrait_photo(), user)
    kept = make_thumbnail(user.id, second)
    assert make_thumbnail(user.id, first) == {"thumbnail_url": None, "superseded": True}
    assert not (UPLOADS / first).exists() and not (THUMBNAILS / f"{first}.png").exists()
    assert thumbnail_url(user) == kept["thumbnail_url"]
    third = make_thumbnail(user.id, upload(image("PNG"), user))
    assert thumbnail_url(user) == third["thumbnail_url"]
    assert not (UPLOADS / second).exists() and not thumbnail_file(kept).exists()
    assert (UPLOADS / third["thumbnail_url"].removeprefix("/media/thumbnails/").removesuffix(".png")).exists()


def test_a_portrait_photo_is_made_upright(user):
    done = make_thumbnail(user.id, upload(portrait_photo(), user))
    assert (done["width"], done["height"]) == (96, 128)


def test_transparency_is_kept(user):
    done = make_thumbnail(user.id, upload(image("PNG", mode="RGBA"), user))
    assert Image.open(io.BytesIO(thumbnail_file(done).read_bytes())).mode == "RGBA"


def test_a_truncated_jpeg_fails_in_the_task_and_is_not_kept(user):
    """Its header passed the upload's check; its pixels cannot be decoded."""
    name = upload(truncated_jpeg())
    with pytest.raises(BadImage, match=r"^the image cannot be read: image file is truncated \("):
        make_thumbnail(user.id, name)
    assert not (UPLOADS / name).exists()


def test_the_task_refuses_a_path_outside_its_folder_and_a_bomb(user):
    with pytest.raises(BadImage, match=r"^no upload named '\.\./\.\./app\.db'$"):
        make_thumbnail(user.id, "../../app.db")
    with pytest.raises(BadImage) as refused:
        make_thumbnail(user.id, upload(decompression_bomb(), user))
    assert str(refused.value) == BOMB


def test_a_thumbnail_for_no_user_is_an_error(user):
    with pytest.raises(LookupError, match="^no user 2147483647$"):
        make_thumbnail(2**31 - 1, upload(image()))


def test_image_tasks_go_to_the_images_queue():
    """config.py's task_routes, as data: the router's answer for each task."""
    route = celery.amqp.router.route
    assert route({}, make_thumbnail.name)["queue"].name == "images"
    assert route({}, "tasks.subscribe_user")["queue"].name == "celery"
