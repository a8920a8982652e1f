"""Docker for the tests of chapter 11: a daemon that answers, the official images the chapter names (or stand-ins
for them, where no image registry answers), and the chapter's compose file run as a project of a test's own.

Stand-ins: Debian's minimal system made by mmdebstrap and imported (BASE), and on it what the official images have
that the chapter relies on, built from the recipes in tests/standins/ and tagged with the official names, so that
the chapter's Dockerfile and compose.yaml run unchanged. Each carries a label with a digest of its recipe, and is
built again only when that changes; the daemon keeps them, and every layer, between runs.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import yaml

from helpers import CLEAN_ENV, missing
from processes import Line, Process, free_port, procfile, wait_for, without

STANDINS = Path(__file__).with_name("standins")
BASE = "standin-debian:bookworm"  # the stand-ins' own base, made by mmdebstrap: never an official name
LABEL = "standin.recipe"
HOW = "install Docker (Debian: apt install docker.io docker-compose mmdebstrap), and start dockerd"
# Where a dockerd started by the tests writes; it is left running, as a system service would be
DOCKERD_LOG = Path(tempfile.gettempdir()) / "dockerd.log"


def run(args, timeout=600, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV, **kwargs)


def answering_docker():
    """The first docker command that talks to a daemon: the one on PATH, else Debian's; None if none does."""
    for docker in dict.fromkeys([shutil.which("docker"), "/usr/bin/docker"]):
        if docker and Path(docker).exists():
            try:
                if run([docker, "version", "--format", "{{.Server.Version}}"], timeout=30).returncode == 0:
                    return docker
            except subprocess.TimeoutExpired:
                pass
    return None


def docker_daemon():
    """The docker command, once a daemon answers it: dockerd is started here when none answers and this process
    may (root). Skips, or fails under CI=true, where Docker cannot run."""
    docker = answering_docker()
    if docker:
        return docker
    if not shutil.which("dockerd") or os.geteuid() != 0:
        missing("no Docker daemon answers, and none can be started here (dockerd, as root)", HOW)
    with DOCKERD_LOG.open("a") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        return wait_for(answering_docker, 60, "dockerd to answer")
    except AssertionError:
        missing(f"dockerd did not start (see {DOCKERD_LOG})", HOW)


def composes(docker):
    """Each Compose at hand, as a command: `docker compose` (v2 and later) and `docker-compose` (v1)."""
    found = []
    if run([docker, "compose", "version"], timeout=30).returncode == 0:
        found.append([docker, "compose"])
    if shutil.which("docker-compose") and run(["docker-compose", "version"], timeout=30).returncode == 0:
        found.append(["docker-compose"])
    if not found:
        missing("no Docker Compose", HOW)
    return found


# --- the official images, or stand-ins for them -------------------------------------------------------------------


def images_named(chapter):
    """The official images the chapter's Dockerfile and compose.yaml name (FROM, image: NAME:TAG)."""
    names = re.findall(r"^FROM\s+(\S+)", (chapter / "Dockerfile").read_text(), re.M)
    names += re.findall(r"^\s+image:\s+(\S+:\S+)\s*$", (chapter / "compose.yaml").read_text(), re.M)
    return names


def images_ready(docker, chapter):
    """The official images the chapter names present, and the layers of its own image built (its requirements: a
    minute or two the first time); one test process at a time, the others wait: no build is done twice side by side."""
    with (Path(tempfile.gettempdir()) / "ch11-images.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_images(docker, images_named(chapter))
        built = run([docker, "build", "--quiet", str(chapter)], timeout=1200)
        assert built.returncode == 0, f"the chapter's image did not build:\n{built.stdout}\n{built.stderr}"


def ensure_images(docker, names):
    """Each image present: as it is, pulled, or else built as a stand-in (again when its recipe has changed)."""
    for name in names:
        recipe = standin_recipe(name)
        inspect = run([docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', name])
        label = inspect.stdout.strip()
        if inspect.returncode == 0 and label in ("", "<no value>", recipe and recipe.digest):
            continue  # the official image, or a current stand-in
        if inspect.returncode != 0 and run([docker, "pull", name], timeout=900).returncode == 0:
            continue
        if recipe is None:
            missing(f"no image {name} here, none can be pulled, and the tests have no stand-in for it", HOW)
        recipe.build(docker)


class Recipe:
    """A stand-in: a Dockerfile of tests/standins/ built on BASE, with the files its context needs."""

    def __init__(self, name, dockerfile, files=(), make_context=None):
        self.name, self.dockerfile, self.make_context = name, STANDINS / dockerfile, make_context
        self.files = [STANDINS / f for f in files]
        digest = hashlib.sha256()
        for path in [self.dockerfile, *self.files]:
            digest.update(path.read_bytes())
        self.digest = digest.hexdigest()[:16]

    def build(self, docker):
        ensure_base(docker)
        with tempfile.TemporaryDirectory() as context:
            context = Path(context)
            for path in self.files:
                shutil.copy2(path, context / path.name)
            if self.make_context:
                self.make_context(context)
            built = run(
                [docker, "build", "-t", self.name, "-f", str(self.dockerfile), "--build-arg", f"BASE={BASE}"]
                + ["--label", f"{LABEL}={self.digest}", str(context)],
                timeout=900,
            )
        assert built.returncode == 0, f"the stand-in {self.name} did not build:\n{built.stdout}\n{built.stderr}"


def standin_recipe(name):
    repository, _, tag = name.partition(":")
    if repository == "python" and (version := re.fullmatch(r"(3\.\d+)-slim", tag)):
        prefix = host_python(version[1])
        if prefix is None:
            return None
        recipe = Recipe(name, "python.Dockerfile", make_context=lambda context: python_context(context, prefix))
        recipe.digest = hashlib.sha256(f"{recipe.digest} {prefix}".encode()).hexdigest()[:16]  # another Python: again
        return recipe
    if repository == "redis" and tag.startswith("7"):
        return Recipe(name, "redis.Dockerfile", ["redis-entrypoint.sh"])
    if repository == "postgres" and tag == "15":
        return Recipe(name, "postgres.Dockerfile", ["postgres-entrypoint.sh"])
    return None


def ensure_base(docker):
    """BASE: Debian's minimal system, made by mmdebstrap (as root) and imported, once."""
    if run([docker, "image", "inspect", BASE]).returncode == 0:
        return
    if not shutil.which("mmdebstrap") or os.geteuid() != 0:
        missing("no image registry answers, and the stand-in images need mmdebstrap, as root", HOW)
    made = subprocess.run(
        f"mmdebstrap --quiet --variant=minbase bookworm - | {docker} import - {BASE}",
        shell=True,
        capture_output=True,
        text=True,
        timeout=900,
        env=CLEAN_ENV,
    )
    assert made.returncode == 0, f"mmdebstrap or docker import failed:\n{made.stderr}"


def host_python(version):
    """The installation folder (sys.base_prefix) of this machine's CPython `version`, if it has one."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(Path("~/.pyenv/versions").expanduser().glob(f"{version}.*/bin/python{version}"))
    for python in filter(None, candidates):
        found = run([str(python), "-c", "import sys; print(sys.base_prefix)"], timeout=30)
        if found.returncode == 0:
            return Path(found.stdout.strip())
    return None


def python_context(context, prefix):
    """python.tar (the interpreter, less its tests and installed packages but pip, as the official image has it),
    the machine's certificates and the pip settings that reach its package index."""
    version = re.search(r"python(3\.\d+)", str(next(prefix.glob("lib/python3.*")))).group(1)
    site = f"lib/python{version}/site-packages/"
    left_out = re.compile(
        rf"(^|/)(__pycache__|test|tests|idle_test|idlelib|tkinter|turtledemo)(/|$)|\.a$|^{re.escape(site)}(?!pip)"
    )

    def keep(member):
        if left_out.search(member.name):
            return None
        member.uid = member.gid = 0
        member.uname = member.gname = "root"
        return member

    with tarfile.open(context / "python.tar", "w") as tar:
        for part in ("bin", "include", "lib", "share"):
            if (prefix / part).exists():
                tar.add(prefix / part, arcname=part, filter=keep)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", context / "ca-certificates.crt")
    (context / "pip.conf").write_text(pip_settings())


def pip_settings():
    """This machine's pip settings that reach a package index from a container: its index and certificates; not its
    local folders (find-links, file:// indexes), which a container does not have."""
    listed = run([shutil.which("pip") or "pip", "config", "list"], timeout=60).stdout
    settings = {"cert": "/etc/ssl/certs/ca-certificates.crt"}
    for key, value in re.findall(r"^[^.\s]*\.([\w-]+)='(.*)'$", listed, re.M):
        if key in ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout"):
            value = " ".join(v for v in value.split() if not v.startswith("file:") and not v.startswith("/"))
            if value:
                settings[key] = value
    return "[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())


# --- the chapter's compose file, as a project of a test's own --------------------------------------------------------


class Project:
    """compose.yaml run with one Compose command, under a project name of its own, its ports free ones."""

    def __init__(self, docker, compose, folder, name):
        self.docker, self.compose, self.folder, self.name = docker, compose, folder, name
        self.ports = {"WEB_PORT": free_port(), "FLOWER_PORT": free_port()}
        self.env = {**CLEAN_ENV, **{key: str(port) for key, port in self.ports.items()}}
        self.web = f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        self.flower = f"http://127.0.0.1:{self.ports['FLOWER_PORT']}"

    def run(self, *args, timeout=600, input=None):
        return subprocess.run(
            [*self.compose, "--project-name", self.name, *args],
            cwd=self.folder,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def __call__(self, *args, timeout=600, input=None):
        """A compose command that must succeed; its output (stdout, then stderr)."""
        done = self.run(*args, timeout=timeout, input=input)
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def follow(self, *services):
        """`logs --follow` of these services, as it comes (a Process): it ends when they stop."""
        return Process(
            [*self.compose, "--project-name", self.name, "logs", "--follow", "--no-color", *services],
            self.folder,
            self.env,
        )

    def logs(self, *services):
        return self.run("logs", "--no-color", *services).stdout

    def containers(self):
        """Each container of the project, as (service, state): ("web", "running"), ("migrate", "exited 0")."""
        listed = run(
            [
                self.docker,
                "ps",
                "--all",
                "--filter",
                f"label=com.docker.compose.project={self.name}",
                "--format",
                '{{.Label "com.docker.compose.service"}} {{.State}} {{.Status}}',
            ],
        ).stdout
        found = []
        for line in listed.splitlines():
            service, state, status = line.split(" ", 2)
            code = re.match(r"Exited \((\d+)\)", status)
            found.append((service, f"exited {code[1]}" if code else state))
        return sorted(found)

    def leftovers(self):
        """What Docker still holds of this project: containers, networks, volumes (by their Compose label)."""
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind in ("container", "network", "volume"):
            listed = run([self.docker, kind, "ls", *(["-a"] if kind == "container" else []), "-q", "--filter", label])
            found += [f"{kind} {line}" for line in listed.stdout.split()]
        return found


# --- the compose file and the Procfile ---------------------------------------------------------------------------


def compose_differs_from_procfile(chapter):
    """What differs between the chapter's Procfile and its compose.yaml; [] when each line of the Procfile is a
    service of its name that runs its command (a server on 0.0.0.0 in the container, on the line's port; a celery
    line but Flower's restarted by reload.py), and the web line's steps (`alembic upgrade head`) are the migrate
    service's command."""
    services = yaml.safe_load((chapter / "compose.yaml").read_text())["services"]
    differences = []
    for line in procfile(chapter):
        command = services.get(line.name, {}).get("command", "")
        reloaded = line.uses_celery and not line.monitor
        run = Line(line.name, command.removeprefix("python reload.py " if reloaded else ""), None)
        if (without(run.argv, "--host", "--port"), run.port) != (without(line.argv, "--host", "--port"), line.port) or (
            reloaded and not command.startswith("python reload.py ")
        ):
            differences.append(f"{line.name}: the Procfile runs {line.command!r}, compose.yaml {command!r}")
        if line.steps and services.get("migrate", {}).get("command") != line.steps:
            differences.append(f"{line.name}: compose.yaml's migrate service does not run {line.steps!r}")
    return differences


def compose_config_problems(chapter):
    """What each Compose at hand says is wrong with the chapter's compose.yaml (`config --quiet`); [] when none."""
    docker = shutil.which("docker")
    if not docker:
        missing("no docker command", HOW)
    problems = []
    for compose in composes(docker):
        checked = run([*compose, "config", "--quiet"], cwd=chapter, timeout=60)
        if checked.returncode:
            problems.append(f"{' '.join(compose)}: {checked.stdout}{checked.stderr}")
    return problems
