"""./run_all.sh CHAPTER on a pseudo-terminal of its own, and the processes it leaves, if any."""

import fcntl
import os
import select
import shutil
import termios
import uuid

from helpers import CLEAN_ENV, ROOT
from processes import Process, free_port, tagged, wait_for

# The shell the tests run ./run_all.sh with: Debian's dash where there is one, the strictest POSIX sh at hand.
SH = shutil.which("dash") or "sh"


class Stack:
    """./run_all.sh CHAPTER on a pseudo-terminal of its own, its controlling terminal, as a reader's terminal
    runs it."""

    def __init__(self, chapter, piped_to=None, root=ROOT, **env):
        self.ports = {"WEB_PORT": free_port(), "FLOWER_PORT": free_port(), "THIRD_PARTY_PORT": free_port()}
        env = CLEAN_ENV | env
        env |= {name: str(port) for name, port in self.ports.items()}
        self.tag = env["RUN_ALL_TAG"] = str(uuid.uuid4())
        self.env = env
        self.web = f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        self.flower = f"http://127.0.0.1:{self.ports['FLOWER_PORT']}"
        self.terminal, tty = os.openpty()
        self.hung_up = False
        self.root = root
        command = [SH, str(root / "run_all.sh"), chapter]
        if piped_to:  # sh run_all.sh CHAPTER | piped_to, typed at bash's prompt: one process group for all
            command = ["bash", "-c", f"{SH} {root / 'run_all.sh'} {chapter} 2>&1 | {piped_to}"]
        self.process = Process(  # its output read from the terminal
            command,
            root,
            env,
            read=self.read_terminal(),
            stdin=tty,
            stdout=tty,
            stderr=tty,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(tty)

    def read_terminal(self):
        """What the terminal shows, as it comes, until it is closed or every process holding it has exited."""
        while not self.hung_up:
            try:
                if not select.select([self.terminal], [], [], 0.1)[0]:
                    continue
                data = os.read(self.terminal, 4096)
            except OSError:  # EIO: every process holding the terminal has exited
                return
            if not data:
                return
            yield data.decode(errors="replace").replace("\r\n", "\n")

    def wait_until_running(self, task_id, timeout=15):
        """Until a worker runs the task: received is not enough, a warm shutdown waits only for tasks it has started."""
        from celery import Celery

        control = Celery(broker=self.env.get("CELERY_BROKER_URL", self.env["REDIS_URL"])).control

        def running():
            active = control.inspect(timeout=0.5).active() or {}
            return any(task["id"] == task_id for tasks in active.values() for task in tasks)

        wait_for(running, timeout, f"task {task_id} to start")

    def ctrl_c(self, timeout=90):
        """Type Ctrl+C: the terminal sends SIGINT to its foreground process group, whichever that is."""
        os.write(self.terminal, b"\x03")
        return self.wait_exit(timeout) if timeout else None

    def wait_exit(self, timeout):
        """The script's exit code, once it and every process it started have exited."""
        self.process.proc.wait(timeout)
        wait_for(lambda: not tagged(self.tag), 30, "every process of run_all.sh to exit")
        return self.process.proc.returncode

    def hang_up(self, timeout=90):
        """Close the terminal, as closing its window does: the kernel sends SIGHUP to what runs in it."""
        self.hung_up = True  # a read under way would keep the terminal open: the reader stops first
        self.process.reader.join(5)
        os.close(self.terminal)
        return self.wait_exit(timeout)

    def kill(self, sig, timeout=90):
        """Send `sig` to the runner itself (kill -9: the runner cannot clean up; its watchdog must)."""
        os.kill(self.process.proc.pid, sig)
        return self.wait_exit(timeout)

    def lines_of(self, name):
        """The lines one process of the stack printed, without their `name | ` prefix."""
        return [
            line.split(" | ", 1)[1] for line in self.process.output.splitlines() if line.split(" | ")[0].strip() == name
        ]
