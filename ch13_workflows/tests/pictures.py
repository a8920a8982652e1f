"""Images made in the tests with Pillow, as bytes: good ones, and chapter 9's bad inputs; none is kept as a file."""

import io
from functools import cache

from PIL import Image


def image(fmt="JPEG", size=(640, 480), mode="RGB", **save):
    """An image of that format and size: a gradient, so that a JPEG of it is not all one colour."""
    picture = Image.linear_gradient("L").resize(size).convert(mode)
    data = io.BytesIO()
    picture.save(data, fmt, **save)
    return data.getvalue()


def portrait_photo():
    """A 640 x 480 JPEG taken by a phone held upright: its EXIF orientation (6) says to turn it a quarter."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return image(exif=exif)


def damaged_png():
    """A PNG with one byte of its pixels changed: its checksum no longer matches."""
    data = bytearray(image("PNG", size=(64, 64)))
    data[data.find(b"IDAT") + 10] ^= 0xFF
    return bytes(data)


def truncated_jpeg():
    """A JPEG cut short: its header reads well, its pixels do not (the task finds out, not the upload)."""
    return image()[:-2000]


def blank_png(size):
    """A black and white PNG, all black: a few kB, whatever its size in pixels."""
    data = io.BytesIO()
    Image.new("1", size).save(data, "PNG")
    return data.getvalue()


@cache  # made once: it takes a moment
def decompression_bomb():
    """A 10,000 x 10,000 PNG of 12 kB: 100 million pixels, more than Pillow's limit (89.5 million)."""
    return blank_png((10_000, 10_000))
