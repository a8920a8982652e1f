"""ch09_thumbnails, in the order of its README: the diff, the migration, an avatar made a thumbnail and served, its
states pushed, the two queues and their workers, every bad input, the upload limit, the page, and no server error.

Real processes started with the Procfile's commands: `alembic upgrade head`, the `celery` and the `images` workers,
the stand-in, `uvicorn main:app`; the images are made here with Pillow; the database and the media folder are the
test's own.
"""

import io
import json
import socket
import subprocess
from urllib.parse import urlsplit

import httpx2
import pytest
from PIL import Image
from playwright.sync_api import expect
from websockets.sync.client import connect

from beat_helpers import earlier_tasks_results, second_terminal
from helpers import (
    address,
    avatars_may_be_refused,
    bodies_over_64_kib_are_refused,
    no_request_gets_a_server_error,
    own_database,
    pictures,
    readme_has_current_diff,
    status_when_done,
)
from processes import Process, free_port, wait_for
from scenarios import assert_redis_down_then_back

CHAPTER = "ch09_thumbnails"
MAX_UPLOAD = 10 * 1024 * 1024
BOUNDARY = "thumbnail-test-boundary"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("ch09") / "media"


@pytest.fixture(scope="module")
def chapter_env(chapter_env, media):
    return chapter_env | own_database(media.parent, THIRD_PARTY_DELAY="0.1")


@pytest.fixture(scope="module")
def web(migrated, web):
    return web


@pytest.fixture(scope="module")
def workers(chapter, start, migrated, third_party):
    """The Procfile's two workers, `celery` and `images`, each in a terminal of its own, once both are ready."""
    started = {name: start.line(name, wait=False) for name in ("worker", "images")}
    return {name: start.ready(process) for name, process in started.items()}


def new_user(web):
    created = httpx2.post(f"{web}/users", json={"email": address(), "name": "Ann"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def upload(web, user_id, data, filename="photo.jpg"):
    return httpx2.post(f"{web}/users/{user_id}/avatar", files={"file": (filename, data)}, timeout=30)


def thumbnail_of(web, data, filename="photo.jpg"):
    """Upload data as a new user's avatar: the task's final status and the user's JSON."""
    user_id = new_user(web)
    answered = upload(web, user_id, data, filename)
    assert answered.status_code == 202, answered.text
    status = status_when_done(web, answered.json()["task_id"])
    return status, httpx2.get(f"{web}/users/{user_id}").json()


def multipart(data):
    """A multipart body of one file field, built by hand: its length is then exactly known."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post_multipart(web, user_id, body):
    return httpx2.post(
        f"{web}/users/{user_id}/avatar",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )


def test_readme_shows_the_current_diff(chapter):
    assert readme_has_current_diff(chapter)


def test_the_migration_adds_thumbnail_url(migrated, start):
    assert (
        "Running upgrade 0001 -> 0002, users: avatar_upload and thumbnail_url, the latest upload and its thumbnail."
        in migrated
    )
    check = start("alembic", "check")
    wait_for(lambda: check.proc.poll() is not None, 30, "alembic check")
    assert (check.stop(), check.output.splitlines()[-1]) == (0, "No new upgrade operations detected."), check.output


def test_an_avatar_becomes_a_thumbnail_served_under_media(web, workers, media):
    status, user = thumbnail_of(web, pictures.image(size=(640, 480)), filename="../../photo.jpg")
    url = user["thumbnail_url"]
    assert status == {
        "task_id": status["task_id"],
        "state": "SUCCESS",
        "retries": 0,
        "result": {"thumbnail_url": url, "width": 128, "height": 96},
        "error": None,
    }
    name = url.removeprefix("/media/thumbnails/").removesuffix(".png")
    assert len(name) == 32 and int(name, 16) >= 0  # a name of the server's, whatever the client called it
    served = httpx2.get(f"{web}{url}")
    assert (served.status_code, served.headers["content-type"]) == (200, "image/png")
    assert Image.open(io.BytesIO(served.content)).size == (128, 96)
    assert (media / "uploads" / name).is_file()
    assert not [path for path in media.parent.rglob("photo.jpg")]  # the client's name is on no file
    assert httpx2.get(f"{web}/media/uploads/{name}").status_code == 404  # the uploads are not served


def test_the_states_are_pushed_over_the_websocket(web, workers):
    task_id = upload(web, new_user(web), pictures.image(size=(2000, 1500))).json()["task_id"]
    with connect(f"ws{web.removeprefix('http')}/ws/task_status/{task_id}", open_timeout=10) as websocket:
        pushed = [json.loads(message) for message in websocket]
    states = [status["state"] for status in pushed]
    assert states in (["PENDING", "STARTED", "SUCCESS"], ["STARTED", "SUCCESS"], ["SUCCESS"])
    assert pushed[-1]["result"]["thumbnail_url"].startswith("/media/thumbnails/")


def test_image_tasks_run_on_the_images_worker_and_subscriptions_on_the_other(web, workers, main):
    user_id = new_user(web)
    task_id = upload(web, user_id, pictures.image()).json()["task_id"]
    assert status_when_done(web, task_id)["state"] == "SUCCESS"
    subscription = httpx2.get(f"{web}/users/{user_id}").json()["task"]["task_id"]
    wait_for(lambda: status_when_done(web, subscription), 30, "the subscription")
    queues = main.celery.control.inspect(timeout=2).active_queues()
    assert sorted((node.split("@")[0], [queue["name"] for queue in queues[node]]) for node in queues) == [
        ("celery", ["celery"]),
        ("images", ["images"]),
    ]
    default, images = workers["worker"].output, workers["images"].output
    assert f"Task images.make_thumbnail[{task_id}] received" in images
    assert f"Task tasks.subscribe_user[{subscription}] received" in default
    assert "Task images." not in default and "Task tasks." not in images  # of every task these tests sent


def test_the_last_upload_wins_whatever_order_the_thumbnails_end_in(web, workers, media, main):
    """A big PNG, then a small JPEG, both queued before either runs (the images worker takes nothing meanwhile): the
    big one's task, whether it ends before the small one's or after, finds a later upload recorded, and ends
    superseded; the user keeps the small one's thumbnail, and nothing of the big one is kept. A third upload then
    replaces the second, whose files go."""
    user_id = new_user(web)
    before = set(media.rglob("*"))
    images = [f"images@{socket.gethostname()}"]
    main.celery.control.cancel_consumer("images", destination=images, reply=True)
    try:
        big = upload(web, user_id, pictures.image("PNG", size=(3500, 3500))).json()["task_id"]
        small = upload(web, user_id, pictures.image(size=(64, 48))).json()["task_id"]
    finally:
        main.celery.control.add_consumer("images", destination=images, reply=True)
    superseded, last = status_when_done(web, big), status_when_done(web, small)
    assert superseded["result"] == {"thumbnail_url": None, "superseded": True}
    assert httpx2.get(f"{web}/users/{user_id}").json()["thumbnail_url"] == last["result"]["thumbnail_url"]
    assert set(media.rglob("*")) - before == kept_files(media, last)

    replaced = status_when_done(web, upload(web, user_id, pictures.portrait_photo()).json()["task_id"])
    assert httpx2.get(f"{web}/users/{user_id}").json()["thumbnail_url"] == replaced["result"]["thumbnail_url"]
    assert set(media.rglob("*")) - before == kept_files(media, replaced)


def kept_files(media, status):
    """The upload and the thumbnail of a task's final status."""
    name = status["result"]["thumbnail_url"].removeprefix("/media/thumbnails/")
    return {media / "uploads" / name.removesuffix(".png"), media / "thumbnails" / name}


def test_a_second_terminal_with_redis_url_alone_lists_each_workers_queue(chapter, chapter_env, workers, redis_url):
    command = ["celery", "-A", "main.celery", "inspect", "active_queues"]
    inspect = Process(command, chapter, second_terminal(chapter_env, redis_url))
    wait_for(lambda: inspect.proc.poll() is not None, 30, "celery inspect active_queues")
    assert inspect.stop() == 0 and "2 nodes online." in inspect.output, inspect.output


def test_a_portrait_photo_is_made_upright(web, workers):
    status, _ = thumbnail_of(web, pictures.portrait_photo())
    assert (status["state"], status["result"]["width"], status["result"]["height"]) == ("SUCCESS", 96, 128)


@pytest.mark.parametrize(
    "data, detail",
    [
        (pictures.damaged_png(), "the image cannot be read: broken PNG file (bad header checksum in b'IDAT')"),
        (b"Hello, world", "not an image of a format read here: JPEG, PNG, GIF, WEBP"),
        (b"", "the file is empty"),
        (pictures.image("PNG")[:300], "the image cannot be read: Truncated File Read"),
        (pictures.blank_png((4000, 4000)), "4000 x 4000 pixels: a PNG avatar may have 12,500,000 at most"),
        (
            pictures.decompression_bomb(),
            "Image size (100000000 pixels) exceeds limit of 89478485 pixels, could be decompression bomb DOS attack.",
        ),
    ],
    ids=["a damaged PNG", "not an image", "empty", "a truncated PNG", "too many pixels", "a decompression bomb"],
)
def test_a_bad_file_is_a_422_and_is_not_kept(web, media, data, detail):
    user_id = new_user(web)
    kept = set((media / "uploads").iterdir())
    refused = upload(web, user_id, data)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith(detail), refused.json()
    assert set((media / "uploads").iterdir()) == kept


def test_no_user_is_a_404_and_a_missing_file_a_422(web):
    missing = upload(web, 2147483647, pictures.image())
    assert (missing.status_code, missing.json()) == (404, {"detail": "no user 2147483647"})
    no_file = httpx2.post(f"{web}/users/{new_user(web)}/avatar", data={"photo": "x"})
    assert (no_file.status_code, no_file.json()["detail"][0]["loc"], no_file.json()["detail"][0]["msg"]) == (
        422,
        ["body", "file"],
        "Field required",
    )


def test_a_truncated_jpeg_is_a_failure_saying_so_and_is_not_kept(web, workers, media):
    kept = set((media / "uploads").iterdir())
    status, user = thumbnail_of(web, pictures.truncated_jpeg())
    assert (status["state"], user["thumbnail_url"]) == ("FAILURE", None)
    assert status["error"].startswith("BadImage: the image cannot be read: image file is truncated ("), status
    assert set((media / "uploads").iterdir()) == kept


def images_pool(main):
    """The process ids of the images worker's pool, as `celery inspect stats` lists them."""
    node = f"images@{socket.gethostname()}"
    stats = main.celery.control.inspect(timeout=2, destination=[node], limit=1).stats()
    return sorted(stats[node]["pool"]["processes"])


def test_an_images_process_grown_past_its_memory_limit_is_replaced_after_its_task(web, workers, main):
    """A PNG of 12 million pixels with transparency takes an images process past the Procfile's
    --max-memory-per-child=150000 (KiB) while it is decoded: its thumbnail is made, then the process is replaced. A
    small photo's does not."""
    pool = images_pool(main)
    assert thumbnail_of(web, pictures.image())[0]["state"] == "SUCCESS"
    assert images_pool(main) == pool
    status, _ = thumbnail_of(web, pictures.image("PNG", size=(3500, 3500), mode="RGBA"))
    assert (status["state"], status["result"]["width"]) == ("SUCCESS", 128)
    replaced = wait_for(lambda: (now := images_pool(main)) != pool and now, 10, "a process replaced")
    assert len(replaced) == len(pool) and len(set(replaced) - set(pool)) == 1


def test_up_to_10_mib_is_taken(web, workers):
    png = pictures.image("PNG", size=(64, 64))
    body = multipart(png + b"\0" * (MAX_UPLOAD - len(multipart(png))))  # bytes after a PNG's end: ignored
    assert len(body) == MAX_UPLOAD
    accepted = post_multipart(web, new_user(web), body)
    assert accepted.status_code == 202, accepted.text
    assert status_when_done(web, accepted.json()["task_id"])["result"]["width"] == 64
    over = post_multipart(web, new_user(web), body[:-2] + b"\0" + body[-2:])
    assert (over.status_code, over.text) == (413, "Content Too Large")


def test_an_oversized_upload_is_refused_before_it_is_sent(web):
    """The client announces 11 MiB and sends 64 KiB of it: the 413 comes back while the rest is unsent."""
    address = urlsplit(web)
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        client.sendall(
            f"POST /users/1/avatar HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Length: {11 * 1024 * 1024}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
            + multipart(b"\0" * 65_536)[:65_536]
        )
        answer = b""
        while not answer.endswith(b"Content Too Large") and (received := client.recv(65_536)):  # 10 s at most
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b"\r\n\r\nContent Too Large"), answer


def test_every_other_route_keeps_the_64_kib_limit(web):
    with httpx2.Client(base_url=web) as client:
        assert bodies_over_64_kib_are_refused(client, path="/subscribe", body='{"email": "kib@example.com"}')


def test_the_task_itself_refuses_a_bomb_and_any_path_outside_its_folder(web, workers, media, main):
    """The task, sent as from the shell, with what the API would refuse: the worker defends itself too."""
    user_id = new_user(web)
    (media / "uploads" / "bomb").write_bytes(pictures.decompression_bomb())
    make_thumbnail = main.celery.tasks["images.make_thumbnail"]
    bomb, outside = make_thumbnail.delay(user_id, "bomb"), make_thumbnail.delay(user_id, "../../app.db")
    assert status_when_done(web, bomb.id)["error"] == (
        "BadImage: Image size (100000000 pixels) exceeds limit of 89478485 pixels, could be decompression bomb DOS "
        "attack."
    )
    assert status_when_done(web, outside.id)["error"] == "BadImage: no upload named '../../app.db'"
    for name, worker in workers.items():
        assert worker.proc.poll() is None, name
        assert "WorkerLostError" not in worker.output and "Traceback" not in worker.output, worker.output


def test_the_page_shows_the_states_then_the_thumbnail(page, web, workers, tmp_path):
    photo, text = tmp_path / "photo.jpg", tmp_path / "notes.txt"
    photo.write_bytes(pictures.image(size=(800, 600)))
    text.write_text("not an image")
    page.goto(f"{web}/form_avatar")
    states = page.locator("#states")
    page.fill("input[name=email]", address())
    page.click("#user button")
    expect(states).to_contain_text("created")
    page.set_input_files("input[type=file]", photo)
    page.click("#avatar button")
    expect(states).to_contain_text("SUCCESS", timeout=20_000)
    expect(states).to_contain_text("socket closed (1000)")
    thumbnail = page.locator("#thumbnail")
    expect(thumbnail).to_be_visible()
    wait_for(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth") == 128, 10, "the thumbnail")
    assert thumbnail.evaluate("img => img.naturalHeight") == 96

    page.set_input_files("input[type=file]", text)
    page.click("#avatar button")
    expect(states).to_have_text("422: not an image of a format read here: JPEG, PNG, GIF, WEBP")
    expect(thumbnail).to_be_hidden()


def test_chapter_3s_divide_and_chapter_6s_import_still_run(web, workers, third_party):
    divided, imported = earlier_tasks_results(web)
    assert (divided, imported["subscribed"], len(imported["failed"])) == (0.25, 1, 1)


def test_without_redis_the_api_says_so_and_recovers(chapter, chapter_env):
    assert_redis_down_then_back(chapter, chapter_env)


def test_no_request_gets_a_server_error(api_schema, migrated):
    """Every check, but for the upload, whose valid input may be refused (helpers.avatars_may_be_refused)."""
    assert no_request_gets_a_server_error(avatars_may_be_refused(api_schema))


def test_the_media_folder_is_git_ignored(chapter):
    ignored = subprocess.run(["git", "check-ignore", "-q", str(chapter / "media" / "uploads" / "x")], cwd=chapter)
    assert ignored.returncode == 0


def test_run_all_starts_both_workers_named_after_their_queues(stack, tmp_path):
    """The Procfile, run by ./run_all.sh with a Redis of its own: a worker for each queue, named after it."""
    ch09 = stack("9", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **own_database(tmp_path))
    ch09.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=120)
    host, port = socket.gethostname(), ch09.ports["WEB_PORT"]
    for name in (f"celery-web{port}@{host}", f"images-web{port}@{host}", f"{ch09.web}/form_avatar"):
        assert name in ch09.process.output, ch09.process.output

    def queues():  # of each worker, as Flower shows them
        workers = httpx2.get(f"{ch09.flower}/api/workers", timeout=5).json()
        return {name: [queue["name"] for queue in worker.get("active_queues", [])] for name, worker in workers.items()}

    expected = {f"celery-web{port}@{host}": ["celery"], f"images-web{port}@{host}": ["images"]}
    wait_for(lambda: queues() == expected, 30, "Flower to list both workers")
    status, user = thumbnail_of(ch09.web, pictures.image())
    assert (status["state"], status["result"]["width"]) == ("SUCCESS", 128)
    assert (tmp_path / "media" / user["thumbnail_url"].removeprefix("/media/")).is_file()
    assert ch09.ctrl_c() == 130
