#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document: schemathesis (from
# PyPI, in a virtual environment under target/) runs every check it has
# against a real agent-server (embedded PostgreSQL, scripted model),
# authenticated as admin: responses must match the document (statuses,
# content types, headers, bodies), schema-valid requests must be accepted and
# invalid ones refused, operations that need a token must refuse none, and
# nothing may answer 5xx. Any failure fails the test command.
#
# The WebSocket upgrade (`GET /api/ws`) is left out: OpenAPI cannot describe
# the protocol after the upgrade, and an HTTP client that received `101`
# would reuse a connection that now speaks WebSocket. tests/api/ws.rs and the
# browser tests cover it.
#
# Needs target/debug/agent-server (built by `cargo test`) and python3 with
# venv (on Debian as root, python3-venv is installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so a run is repeatable; `FUZZ_EXAMPLES` and `FUZZ_SEED` vary it.
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${FUZZ_EXAMPLES:-200}
SEED=${FUZZ_SEED:-20261204}
venv=target/fuzz-venv

if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version | grep -q "$SCHEMATHESIS_VERSION"; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q
      apt-get install -y -q --no-install-recommends python3-venv
      python3 -m venv "$venv"
    else
      echo "fuzz: python3 cannot make a virtual environment; install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

source tests/server.sh
work=$(mktemp -d /tmp/agent-server-fuzz.XXXXXX)
chmod 755 "$work"
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

# A token made for this run only, never printed; the limits are raised so
# that the fuzzer's thousands of requests meet the API, not the rate limit.
token="fuzz-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
start_server "$work" AGENT_SERVER_ADMIN_TOKEN="$token" AGENT_RATE_LIMIT_RUNS_PER_MIN=1000000 \
  AGENT_MAX_OPEN_RUNS_PER_TOKEN=10000000 RUST_LOG=warn

status=0
"$venv/bin/st" --config-file tests/schemathesis.toml run "$base/api/openapi.json" \
  --checks all \
  -H "Authorization: Bearer $token" \
  --exclude-path /api/ws \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --workers 2 \
  --no-color >"$work/schemathesis.log" 2>&1 || status=$?
# The summary: operations, requests generated, failures.
sed -n '/= SUMMARY =/,$p' "$work/schemathesis.log"
if [ "$status" != 0 ]; then
  cat "$work/schemathesis.log"
  echo "fuzz: schemathesis found failures (exit $status)" >&2
  exit 1
fi
if grep -q '"level":"ERROR"' "$work/server.log" && grep '"level":"ERROR"' "$work/server.log" | grep -vq 'request parse error'; then
  grep '"level":"ERROR"' "$work/server.log" | grep -v 'request parse error' | head -20
  echo "fuzz: the server logged errors while fuzzed" >&2
  exit 1
fi
echo "fuzz: no failures"
