#!/usr/bin/env bash
# Starts a PostgreSQL of the tests' own on a free loopback port (never the machine's server):
#   eval "$(scripts/private_postgres.sh start DIR)"   exports TEST_DATABASE_URL
#   scripts/private_postgres.sh stop DIR
# Uses Debian's PostgreSQL binaries (/usr/lib/postgresql/N/bin, installed with apt when root and
# missing). As root the cluster runs as `nobody`, which owns DIR. Prints nothing to eval when it
# cannot start one: the PostgreSQL variants of the tests then skip.
set -euo pipefail
action=$1
dir=$2

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }

if [ "$action" = stop ]; then
  bin=$(bin_dir)
  [ -n "$bin" ] && [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  exit 0
fi

bin=$(bin_dir)
if [ -z "$bin" ] && [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 || true
  bin=$(bin_dir)
fi
if [ -z "$bin" ]; then
  echo "echo '== no PostgreSQL binaries: the PostgreSQL variants will skip'"
  exit 0
fi
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown nobody "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test
echo "export TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$port/test"
