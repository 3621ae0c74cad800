# Sourced by the shell checks (tests/stack-check.sh, tests/fuzz.sh): starts
# target/debug/agent-server with an embedded PostgreSQL under a work
# directory and waits for its address.
#
#   start_server WORK [VAR=VALUE ...]
#
# runs the server with a clean environment (PATH, the data dir WORK/data,
# port 0, JSON logs, and the given variables), logging to WORK/server.log;
# sets `server_pid` and `base` (http://127.0.0.1:PORT); exits the script
# with the log if the server stops or does not start within 30 s.
# `stop_server` sends SIGTERM and waits.

start_server() {
  local work=$1
  shift
  # Made first, so it can be read before the server has opened it.
  : >"$work/server.log"
  env -i PATH="$PATH" AGENT_SERVER_ADDR=127.0.0.1:0 AGENT_SERVER_DATA_DIR="$work/data" \
    LOG_FORMAT=json "$@" target/debug/agent-server serve >"$work/server.log" 2>&1 &
  server_pid=$!
  base=""
  for _ in $(seq 1 300); do
    base=$(sed -n 's/^agent-server listening on \(http:[^ ]*\)$/\1/p' "$work/server.log")
    [ -n "$base" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$(basename "$0"): the server did not start" >&2
  cat "$work/server.log" >&2
  exit 1
}

stop_server() {
  if [ -n "${server_pid:-}" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
