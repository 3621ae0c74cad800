# Sourced by the shell checks (tests/stack-check.sh, tests/fuzz.sh,
# tests/lb-check.sh): starts target/debug/agent-server, with an embedded
# PostgreSQL under a work directory or on a cluster of its own, and waits for
# its address.
#
#   start_server WORK [VAR=VALUE ...]
#
# runs the server with a clean environment (PATH, the data dir WORK/data,
# port 0, JSON logs, and the given variables), logging to WORK/server.log;
# sets `server_pid` and `base` (http://127.0.0.1:PORT); exits the script
# with the log if the server stops or does not start within 30 s.
# `stop_server [PID ...]` sends SIGTERM and waits (default: `server_pid`).
#
# Several servers at once: `spawn_server LOG [VAR=VALUE ...]` starts one
# without waiting (sets `server_pid`), `wait_for_server PID LOG` waits for it
# (sets `base`), so that they start side by side as under a process manager.
#
#   start_postgres WORK
#
# creates and starts a PostgreSQL cluster from the system's binaries under
# WORK/pg, on a Unix socket only (as the `postgres` user when run as root,
# since PostgreSQL refuses root; WORK must be enterable by that user), and
# sets `database_url` for the servers' DATABASE_URL; `stop_postgres` stops it.
#
#   install_missing NAME PACKAGE ...
#
# installs the Debian packages given (those a check found missing) when run
# as root with apt-get, or exits saying which to install; NAME prefixes its
# messages. Nothing happens when no package is given.

start_server() {
  local work=$1
  shift
  spawn_server "$work/server.log" AGENT_SERVER_DATA_DIR="$work/data" "$@"
  wait_for_server "$server_pid" "$work/server.log"
}

spawn_server() {
  local log=$1
  shift
  # Made first, so it can be read before the server has opened it.
  : >"$log"
  env -i PATH="$PATH" AGENT_SERVER_ADDR=127.0.0.1:0 LOG_FORMAT=json "$@" \
    target/debug/agent-server serve >"$log" 2>&1 &
  server_pid=$!
}

wait_for_server() {
  local pid=$1 log=$2
  base=""
  for _ in $(seq 1 300); do
    base=$(sed -n 's/^agent-server listening on \(http:[^ ]*\)$/\1/p' "$log")
    [ -n "$base" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$(basename "$0"): the server did not start ($log)" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  local pid
  if (($# == 0)) && [ -n "${server_pid:-}" ]; then
    set -- "$server_pid"
  fi
  for pid in "$@"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    wait "$pid" 2>/dev/null || true
  done
}

# The directory of initdb and pg_ctl: pg_config's answer, else Debian's
# highest /usr/lib/postgresql/VERSION/bin (Debian keeps them off PATH).
pg_bindir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null) && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  return 1
}

start_postgres() {
  local work=$1 bindir
  if ! bindir=$(pg_bindir); then
    echo "$(basename "$0"): no PostgreSQL server binaries (initdb, pg_ctl); install them (Debian: apt-get install postgresql)" >&2
    exit 1
  fi
  pg_dir="$work/pg"
  mkdir -p "$pg_dir/socket"
  # initdb, pg_ctl and postgres refuse to run as root.
  as_postgres=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$pg_dir"
    as_postgres=(runuser -u postgres --)
  fi
  pg_ctl="$bindir/pg_ctl"
  if ! "${as_postgres[@]}" "$bindir/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
    -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1; then
    echo "$(basename "$0"): initdb failed" >&2
    cat "$pg_dir/initdb.log" >&2
    exit 1
  fi
  # No TCP listener: the socket directory alone names the cluster, so it
  # cannot clash with another PostgreSQL on the machine; the socket is its
  # owner's (and root's) only, as every login is trusted.
  if ! "${as_postgres[@]}" "$pg_ctl" start -w -t 60 -D "$pg_dir/data" -l "$pg_dir/postgres.log" \
    -o "-c listen_addresses='' -k '$pg_dir/socket' -c unix_socket_permissions=0700" >/dev/null; then
    echo "$(basename "$0"): PostgreSQL did not start" >&2
    cat "$pg_dir/postgres.log" >&2
    exit 1
  fi
  database_url="host=$pg_dir/socket user=postgres dbname=postgres"
}

stop_postgres() {
  if [ -n "${pg_dir:-}" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    "${as_postgres[@]}" "$pg_ctl" stop -w -m fast -D "$pg_dir/data" >/dev/null 2>&1 || true
  fi
}

install_missing() {
  local name=$1
  shift
  (($#)) || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$name: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
  else
    echo "$name: missing $*; install them (Debian: apt-get install $*)" >&2
    exit 1
  fi
}
