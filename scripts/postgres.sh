#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests (Debian's packages).
#   bash scripts/postgres.sh start DIR   installs postgresql if missing, starts a server with its data in
#                                        DIR, prints its SQLAlchemy URL as the last line of stdout
#   bash scripts/postgres.sh stop DIR    stops it
# Exits non-zero with the reason on stderr when no server can be started (the caller decides to skip).
set -euo pipefail
action=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_db_user() {  # the server refuses to run as root: use Debian's postgres account then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "$action" = stop ]; then
  bin=$(bindir)
  [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ] && as_db_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
  exit 0
fi

if [ -z "$(bindir)" ]; then
  if [ "$(id -u)" != 0 ]; then echo "postgresql is not installed and this user cannot apt-get install it" >&2; exit 1; fi
  echo "installing Debian's postgresql ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends postgresql >&2; } \
    || { echo "apt-get install postgresql failed" >&2; exit 1; }
fi
bin=$(bindir)
[ -n "$bin" ] || { echo "no PostgreSQL binaries under /usr/lib/postgresql after installing" >&2; exit 1; }

mkdir -p "$dir"
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '%s\n' "$password" > "$dir/pwfile"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; fi
as_db_user "$bin/initdb" -D "$dir/data" -U scaleot --pwfile="$dir/pwfile" --auth=scram-sha-256 -E UTF8 \
  --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
rm -f "$dir/pwfile"
# loopback only; fsync off: a test server's data is thrown away, durability buys nothing here
as_db_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >&2 \
  || { cat "$dir/server.log" >&2; exit 1; }
echo "postgresql+psycopg://scaleot:$password@127.0.0.1:$port/postgres"
