#!/bin/sh
# One command per job: run a chapter's whole stack in one terminal, run the tests or the benchmarks, open a shell
# in a chapter, or show what a chapter changed. `./run_all.sh` alone prints the usage and the chapters.
# This makes .venv (again whenever a requirements file changes) and hands over to run_all.py, which does the work.
# Plain POSIX sh: it runs under dash, and under the bash 3.2 of macOS.
set -eu

ROOT=$(cd "$(dirname "$0")" && pwd)
VENV=$ROOT/.venv
PY=$VENV/bin/python

die() { echo "run_all.sh: $*" >&2; exit 1; }

find_python() {
  for py in ${PYTHON:-} python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo "$py"; return; }
  done
  die "Python 3.11 or newer is needed; found: $(python3 --version 2>&1 || echo none). Install one, or name it: PYTHON=python3.12 ./run_all.sh ..."
}

ensure_venv() {  # ensure_venv REQUIREMENTS_FILE: create .venv and install, again whenever the file changes
  stamp=$VENV/.installed-$1
  sum=$(cat "$ROOT/requirements.txt" "$ROOT/$1" | cksum)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && return
  if [ ! -x "$PY" ]; then
    python=$(find_python)
    echo "Creating .venv with $python ..."
    "$python" -m venv "$VENV" || die "could not create .venv (on Debian or Ubuntu: apt install python3-venv)"
  fi
  echo "Installing $1 into .venv (first run only) ..."
  "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/$1" || die "pip could not install $1"
  echo "$sum" >"$stamp"
}

case ${1:-} in
  "" | -h | --help | help | diff)  # need nothing installed
    [ -x "$PY" ] || PY=$(find_python) ;;
  test) ensure_venv requirements-dev.txt ;;
  *) ensure_venv requirements.txt ;;
esac
# Ctrl+C while Python starts is ignored, not a traceback: run_all.py sets its own handler first thing.
trap '' INT
exec "$PY" "$ROOT/run_all.py" "$@"
