"""Run a command, and run it again whenever a .py file of this folder changes: warm, its running tasks finish first.

Usage: python reload.py celery -A main.celery worker --loglevel=info

compose.yaml runs the workers and beat with it (uvicorn has --reload of its own). The command gets SIGTERM, a Celery
worker's warm shutdown, and GRACE seconds to exit, both at a change and when this process is stopped itself (`docker
compose down` sends it SIGTERM); only then SIGKILL. The watchfiles command gives it 5 s at a stop, whatever its
--sigint-timeout says (README: "Why reload.py, not the watchfiles command").
"""

import signal
import subprocess
import sys

from watchfiles import PythonFilter, watch

# More than the longest task (config.py's time limit, 35 s); compose.yaml's stop_grace_period is longer still
GRACE = 40


def stop(process):
    process.terminate()  # warm, however often it is sent; nothing if the process has exited
    try:
        process.wait(GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(command):
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop is a KeyboardInterrupt here, as Ctrl+C is
    process = subprocess.Popen(command)
    try:
        for changes in watch(".", watch_filter=PythonFilter()):
            names = ", ".join(sorted({path.rpartition("/")[2] for _, path in changes}))
            print(f"reload.py: {names} changed: restarting {command[0]} (running tasks finish first)", flush=True)
            stop(process)
            process = subprocess.Popen(command)
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
    # A worker that the stop's SIGTERM reached before it could take it warmly (started a moment before) stopped as
    # asked; any other signal is told as a shell tells it, 128 + its number, not as a negative number's last byte
    if process.returncode == -signal.SIGTERM:
        return 0
    return 128 - process.returncode if process.returncode < 0 else process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
