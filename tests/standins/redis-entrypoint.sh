#!/bin/sh
# What the official redis image's entrypoint does that a compose file relies on: `redis-server ...` (or options
# alone) runs as the user redis, in /data, reachable from other containers (no protected mode).
set -e
case "${1:-}" in -* | *.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
  shift
  config=
  case "${1:-}" in *.conf) config=$1; shift ;; esac
  set -- redis-server $config --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis .
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
