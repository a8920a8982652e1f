"""A user's avatar: POST /users/{id}/avatar stores the upload, checked, and sends make_thumbnail its name, never its
bytes; the task makes the thumbnail with Pillow and records its address on the user, served under /media/thumbnails/.

The task's name starts with `images.`: config.py's CELERY_TASK_ROUTES sends it to the `images` queue, which a worker
of its own consumes (ch09_thumbnails/README.md, "Two queues"). What is checked where, and why:
ch09_thumbnails/README.md, "Uploads, safely".
"""

import os
import uuid
import warnings
from contextlib import contextmanager
from shutil import copyfileobj

from celery import shared_task
from fastapi import APIRouter, HTTPException, UploadFile
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import update

from config import get_settings
from database import Session
from models import User
from retrying import Retrying
from users import DB, UNAVAILABLE, UserId

MAX_UPLOAD = 10 * 1024 * 1024  # bytes; every other route keeps the app's 64 KiB
# The formats read, each with the most pixels an avatar may have in it, so that decoding one costs a worker's process
# 100 MB at most (ch09_thumbnails/README.md, "Memory"). A JPEG is decoded at the smallest scale the thumbnail allows,
# down to an eighth a side: a 48-megapixel photo costs a few megabytes. The others are decoded whole, a PNG at up to 8
# bytes a pixel, a WebP at up to 16.
MAX_PIXELS = {"JPEG": 50_000_000, "PNG": 12_500_000, "GIF": 12_500_000, "WEBP": 6_250_000}
FORMATS = tuple(MAX_PIXELS)  # Pillow's readers for these only: none of the rarely used, rarely safe ones
SIZE = (128, 128)  # the thumbnail fits in this box, its proportions kept
UPLOADS, THUMBNAILS = get_settings().MEDIA_ROOT / "uploads", get_settings().MEDIA_ROOT / "thumbnails"
# More pixels than Image.MAX_IMAGE_PIXELS (89.5 million) is an error, in this whole process: Pillow only warns below
# twice that, and a PNG of 12 kB can hold 100 million pixels, 300 MB once decoded in colour
# (ch09_thumbnails/README.md, "Uploads, safely").
warnings.simplefilter("error", Image.DecompressionBombWarning)

images_router = APIRouter()


class BadImage(ValueError):
    """Bytes that are no image Pillow can make a thumbnail of: a 422 from the API, a FAILURE from the task."""


@images_router.post(
    "/users/{user_id}/avatar",
    status_code=202,
    max_body_size=MAX_UPLOAD,
    responses={
        400: {"description": "Not a multipart form"},
        404: {"description": "No such user"},
        413: {"description": "Over 10 MiB"},
        422: {"description": "No file, or not an image read here"},
        **UNAVAILABLE,
    },
)
def upload_avatar(user_id: UserId, file: UploadFile, session: DB):
    if session.get(User, user_id) is None:
        raise HTTPException(404, f"no user {user_id}")
    session.close()  # no transaction held open while the file is copied
    UPLOADS.mkdir(parents=True, exist_ok=True)
    upload = UPLOADS / uuid.uuid4().hex  # a name of the server's: file.filename is never used
    with upload.open("xb") as stored:
        copyfileobj(file.file, stored, 1024 * 1024)  # a megabyte at a time, never the whole file in memory
    try:
        check(upload)
        # From now on this upload is the user's avatar, committed before its task is sent: of two uploads, the task of
        # the last one alone records its thumbnail, whichever ends first
        # (ch09_thumbnails/README.md, "The last upload wins")
        session.execute(update(User).where(User.id == user_id).values(avatar_upload=upload.name))
        session.commit()
    except BadImage as exc:
        upload.unlink()
        raise HTTPException(422, str(exc)) from None
    except Exception:
        upload.unlink()  # the database away, a 503: nothing of the upload is kept either
        raise
    return {"task_id": make_thumbnail.delay(user_id, upload.name).id}


def check(path):
    """Raise BadImage unless path holds an image Pillow reads, of a size it may decode: its header and structure are
    read here, in the request; its pixels only by the task, on the images worker."""
    if path.stat().st_size == 0:
        raise BadImage("the file is empty")
    with opened(path) as image:
        image.verify()  # a PNG's every checksum: a truncated one fails here; a JPEG's only when the task decodes it


@contextmanager
def opened(path):
    """The image at path, read by the readers of FORMATS only; whatever they raise for bad bytes becomes a BadImage."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS[image.format]:
                limit = f"a {image.format} avatar may have {MAX_PIXELS[image.format]:,} at most"
                raise BadImage(f"{image.width} x {image.height} pixels: {limit}")
            yield image
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not an image of a format read here: {', '.join(FORMATS)}") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(str(exc)) from None
    except Exception as exc:  # OSError, SyntaxError, ValueError...: Pillow's readers raise many kinds for bad bytes
        raise BadImage(f"the image cannot be read: {exc}") from None


# The database away: waited for (retrying.py). A bad image: FAILURE at once, logged without a traceback (throws).
@shared_task(base=Retrying, throws=(BadImage,))
def make_thumbnail(user_id, upload):  # upload: the file's name in the uploads folder, never a path of elsewhere
    source, name = UPLOADS / os.path.basename(upload), f"{os.path.basename(upload)}.png"
    if not source.is_file():
        raise BadImage(f"no upload named {upload!r}")
    try:
        with opened(source) as image:
            image.thumbnail(SIZE)  # a JPEG is decoded at the smallest scale still big enough: fast, little memory
            small = ImageOps.exif_transpose(image)  # a phone's portrait photo, upright
            small = small.convert("RGBA" if "A" in small.getbands() or "transparency" in small.info else "RGB")
    except BadImage:
        source.unlink()  # nothing of a bad file is kept
        raise
    THUMBNAILS.mkdir(parents=True, exist_ok=True)
    small.save(THUMBNAILS / f"{name}.part", "PNG")
    os.replace(THUMBNAILS / f"{name}.part", THUMBNAILS / name)  # whole, or not there: never served half-written
    url = f"/media/thumbnails/{name}"
    previous, kept = keep(user_id, source.name, url)
    if not kept:
        # A later upload replaced this one meanwhile: this thumbnail goes, unless it is the one the user still shows
        if previous != url:
            discard(url)
        return {"thumbnail_url": None, "superseded": True}
    if previous not in (None, url):
        discard(previous)  # the thumbnail it replaced, and that one's upload
    return {"thumbnail_url": url, "width": small.width, "height": small.height}


def keep(user_id, upload, url):
    """Record url as the user's thumbnail if upload is still the user's latest: the thumbnail it had, and whether url
    was recorded. Two transactions, the second one's first statement a write: see
    ch08_database/README.md, "Two writers on SQLite"."""
    with Session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise LookupError(f"no user {user_id}")
        previous = user.thumbnail_url
    with Session.begin() as session:
        latest = update(User).where(User.id == user_id, User.avatar_upload == upload)
        return previous, session.execute(latest.values(thumbnail_url=url)).rowcount == 1


def discard(url):
    """Delete a thumbnail, by its address, and the upload it was made of."""
    name = url.removeprefix("/media/thumbnails/")
    (THUMBNAILS / name).unlink(missing_ok=True)
    (UPLOADS / name.removesuffix(".png")).unlink(missing_ok=True)


def thumbnails():
    """What create_app serves at /media/thumbnails: the thumbnails the task made, never the uploads beside them."""
    for folder in (UPLOADS, THUMBNAILS):
        folder.mkdir(parents=True, exist_ok=True)
    return StaticFiles(directory=THUMBNAILS)
