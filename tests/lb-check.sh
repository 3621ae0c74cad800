#!/usr/bin/env bash
# Checks the compose file's load-balanced path without Docker: three
# agent-server instances on one PostgreSQL and one shared workspace, behind an
# nginx that runs the configuration users get (infra/nginx/nginx.conf, with
# only the upstream addresses, the listen port and where nginx keeps its own
# files changed). Every request goes through nginx:
#   - runs wait for approvals (the scripted model asks to run a shell command
#     and to write a file); `GET /api/instances` lists the three instances;
#     every approval is decided through nginx, round robin, so decisions land
#     on any instance, whichever instance then drives the run, and every run
#     completes; one run is made the dashboard's way (session cookie and
#     Origin, which must match the Host nginx passes on); nginx and the API
#     agree on the largest body;
#   - a WebSocket through nginx receives a run's events live, gap-free, up to
#     its completion;
#   - after `kill -9` of one instance, POSTs (nginx passes on those the dead
#     instance refused), reads, a new run's decisions and a WebSocket still
#     succeed through nginx, and the instance leaves `GET /api/instances`.
# nginx's access log (with the upstreams that took each request) must show no
# 5xx answer, no body over the limit passed on, requests answered by every
# instance, and a POST passed on from the dead instance to a live one.
#
# Needs target/debug/agent-server (built by `cargo test`) and, on a fresh
# Debian machine as root, installs nginx, PostgreSQL, bubblewrap, curl and
# python3. nginx runs as a process of this script, never as a service.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/server.sh

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
pg_bindir >/dev/null || missing+=(postgresql)
# The scripted model's shell command runs in the sandbox.
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
install_missing lb-check "${missing[@]}"
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x target/debug/agent-server ] || {
  echo "lb-check: target/debug/agent-server is missing; build it first (cargo build)" >&2
  exit 1
}

# How many runs the first phase creates (two decisions each).
RUNS=${LB_CHECK_RUNS:-6}
# Short leases, so that the killed instance leaves `GET /api/instances` within
# seconds; long enough that a busy machine does not lose them.
LEASE_SECS=3
INSTANCES=(agent-server-1 agent-server-2 agent-server-3)
# The one killed with -9.
VICTIM=1

work=$(mktemp -d /tmp/agent-server-lb-check.XXXXXX)
# PostgreSQL (as the postgres user) and nginx's workers enter it.
chmod 755 "$work"
nginx_pid=""
server_pids=()
ws_pid=""
cleanup() {
  local status=$?
  if ((status)); then
    for name in "${INSTANCES[@]}"; do
      [ -f "$work/$name.log" ] || continue
      echo "lb-check: the last lines of $name's log:" >&2
      tail -n 15 "$work/$name.log" >&2
    done
    if [ -s "$work/nginx/error.log" ]; then
      echo "lb-check: nginx's error log:" >&2
      tail -n 15 "$work/nginx/error.log" >&2
    fi
  fi
  [ -n "$ws_pid" ] && kill "$ws_pid" 2>/dev/null || true
  if [ -n "$nginx_pid" ]; then
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  ((${#server_pids[@]})) && stop_server "${server_pids[@]}"
  stop_postgres
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "lb-check: $*" >&2
  exit 1
}
# Milliseconds since the epoch.
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo "${t:0:-3}"
}
started=$(now_ms)

# One cluster, three instances started side by side (as compose starts them:
# migrations and the admin token's bootstrap race), each with its own data
# dir and id, one shared workspace with a file for the coding agent to read.
start_postgres "$work"
mkdir "$work/workspace"
echo "hello from the workspace" >"$work/workspace/hello.txt"
token="lb-check-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
for name in "${INSTANCES[@]}"; do
  # Made beforehand, as the image makes it: the server writes its pid file
  # there, but with DATABASE_URL and an id given it does not create it.
  mkdir "$work/$name"
  spawn_server "$work/$name.log" AGENT_SERVER_DATA_DIR="$work/$name" \
    DATABASE_URL="$database_url" AGENT_WORKSPACE="$work/workspace" \
    AGENT_SERVER_INSTANCE_ID="$name" AGENT_LEASE_SECS="$LEASE_SECS" \
    AGENT_SERVER_ADMIN_TOKEN="$token" LLM_PROVIDER=scripted
  server_pids+=("$server_pid")
done
ports=()
for i in "${!INSTANCES[@]}"; do
  wait_for_server "${server_pids[$i]}" "$work/${INSTANCES[$i]}.log"
  ports+=("${base##*:}")
done
instances_up=$(now_ms)

# nginx on infra/nginx/nginx.conf: the instances' real addresses for the
# compose service names, a free local port for `listen 80`, and, for a
# process that is not the system's service, its pid, logs and temporary
# files under the work directory. The access log names the upstream(s) that
# took each request, so the check can see round robin and retries.
lb_dir="$work/nginx"
mkdir "$lb_dir"
lb_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$lb_dir/local.conf" <<CONF
  # Added by tests/lb-check.sh: this nginx's own files.
  log_format lb_check '\$status|\$request_method|\$uri|\$upstream_addr|\$upstream_status|\$request_time';
  access_log $lb_dir/access.log lb_check;
  client_body_temp_path $lb_dir/client_body;
  proxy_temp_path $lb_dir/proxy;
  fastcgi_temp_path $lb_dir/fastcgi;
  uwsgi_temp_path $lb_dir/uwsgi;
  scgi_temp_path $lb_dir/scgi;
CONF
sed -e "s/server agent-server-1:3200 /server 127.0.0.1:${ports[0]} /" \
  -e "s/server agent-server-2:3200 /server 127.0.0.1:${ports[1]} /" \
  -e "s/server agent-server-3:3200 /server 127.0.0.1:${ports[2]} /" \
  -e "s/^\( *\)listen 80;/\1listen 127.0.0.1:$lb_port;/" \
  -e "/^http {/r $lb_dir/local.conf" \
  infra/nginx/nginx.conf >"$lb_dir/nginx.conf"
# The file's shape is what the substitutions expect, or this would test
# something else than what users run.
[ "$(grep -c "server 127.0.0.1:[0-9]* max_fails" "$lb_dir/nginx.conf")" = 3 ] &&
  ! grep -q 'agent-server-[0-9]:3200' "$lb_dir/nginx.conf" &&
  grep -q "listen 127.0.0.1:$lb_port;" "$lb_dir/nginx.conf" &&
  grep -q "access_log $lb_dir/access.log" "$lb_dir/nginx.conf" ||
  fail "infra/nginx/nginx.conf no longer has three 'server agent-server-N:3200 ...' lines, 'listen 80;' and 'http {'; update tests/lb-check.sh"
# As root, nginx's workers run as its default unprivileged user; the master
# makes the temporary directories above for that user, and the work
# directory is enterable by it.
nginx_args=(-p "$lb_dir" -c "$lb_dir/nginx.conf" -e "$lb_dir/error.log")
"$nginx" -t -q "${nginx_args[@]}" -g "pid $lb_dir/nginx.pid;" ||
  fail "nginx refused the generated configuration $lb_dir/nginx.conf"
"$nginx" "${nginx_args[@]}" -g "daemon off; pid $lb_dir/nginx.pid;" &
nginx_pid=$!
lb="http://127.0.0.1:$lb_port"
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$lb/healthz" 2>/dev/null && break
  kill -0 "$nginx_pid" 2>/dev/null || fail "nginx stopped at start"
  sleep 0.1
done
curl -fsS -o /dev/null "$lb/healthz" || fail "nginx does not answer on $lb"

# call EXPECTED METHOD PATH [JSON [HEADER]]: one request through nginx (JSON
# may be @FILE), with the credentials in `auth`; prints the body, or fails
# naming the status and the body.
auth=(-H "Authorization: Bearer $token")
call() {
  local expected=$1 method=$2 path=$3 body=${4:-} header=${5:-} out code
  local args=(-sS -X "$method" "${auth[@]}" -w '\n%{http_code}')
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data "$body")
  [ -n "$header" ] && args+=(-H "$header")
  out=$(curl "${args[@]}" "$lb$path") || fail "$method $path: no answer from nginx"
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  [ "$code" = "$expected" ] || fail "$method $path answered $code, not $expected: $out"
  printf '%s\n' "$out"
}
# json EXPRESSION: evaluates a Python expression over the JSON `d` on stdin
# (nothing on stdin, after a failed `call`, fails quietly).
json() { python3 -c "import json,sys; s=sys.stdin.read(); s or sys.exit(1); d=json.loads(s); print(eval(sys.argv[1]))" "$1"; }

# live_instances: the ids `GET /api/instances` lists, sorted, space-separated.
live_instances() {
  call 200 GET /api/instances | json '" ".join(sorted(i["id"] for i in d["instances"]))'
}
wait_for_instances() { # the ids expected, space-separated
  local deadline=$((SECONDS + 4 * LEASE_SECS + 5)) seen
  while :; do
    seen=$(live_instances)
    [ "$seen" = "$1" ] && return 0
    ((SECONDS < deadline)) || fail "GET /api/instances lists '$seen', not '$1'"
    sleep 0.1
  done
}

# create_run TASK [HEADER]: a new run through nginx; prints its id.
create_run() {
  call 201 POST /api/runs "{\"task\": \"$1\"}" "${2:-}" | json 'd["id"]'
}

# approve_all RUN ...: approves every approval the runs ask for, as the
# dashboard does (naming the arguments' hash), until every run completed.
decisions=0
approve_all() {
  local deadline=$((SECONDS + 120)) open run state status approval sha progress
  local -A decided=()
  while :; do
    open=0
    progress=0
    for run in "$@"; do
      state=$(call 200 GET "/api/runs/$run" |
        json 'd["status"] + " " + ((d["pending_approval"] or {}).get("approval_id") or "-") + " " + ((d["pending_approval"] or {}).get("args_sha256") or "-")')
      read -r status approval sha <<<"$state"
      case $status in
      completed) continue ;;
      failed | cancelled) fail "run $run ended $status: $(call 200 GET "/api/runs/$run")" ;;
      esac
      open=$((open + 1))
      if [ "$status" = waiting_approval ] && [ "$approval" != - ] && [ -z "${decided[$approval]:-}" ]; then
        call 200 POST "/api/runs/$run/resume" \
          "{\"approval_id\": \"$approval\", \"decision\": \"approved\", \"args_sha256\": \"$sha\"}" >/dev/null
        decided[$approval]=1
        decisions=$((decisions + 1))
        progress=1
      fi
    done
    ((open)) || return 0
    ((SECONDS < deadline)) || fail "runs still open after 120 s: $*"
    ((progress)) || sleep 0.05
  done
}

# A minimal WebSocket client (Python's standard library only): opens
# /api/ws through nginx as a browser on nginx's origin would (so the
# forwarded Host must match the Origin), subscribes to a run from its start,
# prints `subscribed`, then requires every event in order with no gap or
# repeat up to RUN_COMPLETED, and prints `events N`.
cat >"$work/ws-client.py" <<'PY'
import base64, hashlib, json, os, socket, struct, sys, time

port, run_id = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 60
host = f"127.0.0.1:{port}"

def fail(message):
    print(f"lb-check: WebSocket for run {run_id}: {message}", file=sys.stderr)
    sys.exit(1)

sock = socket.create_connection(("127.0.0.1", port), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((
    f"GET /api/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    f"Authorization: Bearer {os.environ['LB_CHECK_TOKEN']}\r\nOrigin: http://{host}\r\n\r\n"
).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = sock.recv(4096)
    if not chunk:
        fail("closed during the handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
lines = head.decode("latin-1").split("\r\n")
if not lines[0].startswith("HTTP/1.1 101"):
    fail(f"the upgrade was refused: {lines[0]} {buf[:300]!r}")
headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
if headers.get("sec-websocket-accept") != accept:
    fail("wrong Sec-WebSocket-Accept")

def recv_exact(n):
    global buf
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            fail("timed out")
        if not chunk:
            fail("the connection closed")
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out

def send(opcode, payload):
    # Client frames are masked (RFC 6455 section 5.3).
    mask, n = os.urandom(4), len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

def messages():
    message = b""
    while True:
        b0, b1 = recv_exact(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", recv_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", recv_exact(8))
        mask = recv_exact(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(recv_exact(n)))
        if opcode == 0x9:
            send(0xA, payload)
        elif opcode == 0x8:
            fail(f"closed by the server: {payload[2:].decode(errors='replace')}")
        elif opcode in (0x0, 0x1):
            message += payload
            if b0 & 0x80:
                yield json.loads(message)
                message = b""

send(0x1, json.dumps({"op": "subscribe", "run_id": run_id, "after": 0}).encode())
seq = 0
for m in messages():
    kind = m.get("type")
    if kind == "subscribed":
        print("subscribed", flush=True)
    elif kind == "error":
        fail(f"error message: {m}")
    elif kind == "event" and m.get("run_id") == run_id:
        event = m["event"]
        if event["seq"] != seq + 1:
            fail(f"event {event['seq']} after {seq}: a gap or a repeat")
        seq = event["seq"]
        if event["type"] in ("RUN_FAILED", "RUN_CANCELLED"):
            fail(f"the run ended with {event['type']}")
        if event["type"] == "RUN_COMPLETED":
            break
send(0x8, struct.pack("!H", 1000))
print(f"events {seq}", flush=True)
PY
ws_events=0
ws_count=0
# watch_run RUN: a WebSocket client following the run, in the background,
# once it is subscribed.
watch_run() {
  : >"$work/ws.out"
  LB_CHECK_TOKEN=$token python3 "$work/ws-client.py" "$lb_port" "$1" >"$work/ws.out" &
  ws_pid=$!
  local deadline=$((SECONDS + 20))
  until grep -q '^subscribed$' "$work/ws.out"; do
    kill -0 "$ws_pid" 2>/dev/null || { wait "$ws_pid" || true; fail "the WebSocket client stopped before it subscribed"; }
    ((SECONDS < deadline)) || fail "the WebSocket was not subscribed within 20 s"
    sleep 0.05
  done
}
# watched_run_done RUN: the client saw every event of the finished run.
watched_run_done() {
  local status=0 events last_seq
  wait "$ws_pid" || status=$?
  ws_pid=""
  ((status == 0)) || fail "the WebSocket client failed (exit $status)"
  events=$(sed -n 's/^events //p' "$work/ws.out")
  last_seq=$(call 200 GET "/api/runs/$1" | json 'd["last_seq"]')
  [ "$events" = "$last_seq" ] || fail "the WebSocket saw $events events of run $1, the journal holds $last_seq"
  ws_events=$((ws_events + events))
  ws_count=$((ws_count + 1))
}

# Phase 1: every instance is up.
wait_for_instances "${INSTANCES[*]}"
phase1=$(now_ms)
# The dashboard's way in: a session cookie, and changes carrying the page's
# Origin, which the server compares with the Host that nginx passes on.
auth=(-c "$work/cookies")
call 204 POST /api/session "{\"token\": \"$token\"}" >/dev/null
auth=(-b "$work/cookies" -H "Origin: $lb")
runs=("$(create_run "tidy up the repository (lb-check, from the dashboard)")")
auth=(-H "Authorization: Bearer $token")
for i in $(seq 2 $((RUNS - 1))); do
  runs+=("$(create_run "tidy up the repository (lb-check $i)")")
done
# One task longer than nginx's in-memory request body buffer: nginx keeps
# the body in a temporary file, which its unprivileged worker must write.
long_task=$(printf 'tidy up the repository %.0s' $(seq 1 800))
runs+=("$(create_run "$long_task")")
# nginx and the API agree on the largest body, 256 KiB: one of exactly that
# size reaches an instance (which refuses the task's length), one byte more
# gets the API's JSON error from nginx itself (the access log must show that
# it reached no instance: see nginx.conf for why).
printf '{"task": "%s"}' "$(head -c $((256 * 1024 - 12)) /dev/zero | tr '\0' x)" >"$work/largest.json"
largest=$(call 400 POST /api/runs "@$work/largest.json" | json 'd["error"]["code"]')
[ "$largest" = invalid_request ] || fail "a body of 256 KiB got '$largest', not the API's invalid_request"
printf '{"task": "%s"}' "$(head -c $((256 * 1024 - 11)) /dev/zero | tr '\0' x)" >"$work/too-large.json"
too_large=$(call 413 POST /api/runs "@$work/too-large.json" | json 'd["error"]["code"]')
[ "$too_large" = payload_too_large ] || fail "a body over 256 KiB got '$too_large', not payload_too_large"
# Followed from its first event, live through its decisions.
watch_run "${runs[0]}"
approve_all "${runs[@]}"
watched_run_done "${runs[0]}"
phase1_ms=$(($(now_ms) - phase1))
phase1_decisions=$decisions

# Phase 2: one instance killed the hard way, its port now refusing.
victim=${INSTANCES[$VICTIM]}
# In braces, so that the shell's "Killed" notice goes nowhere.
{
  kill -9 "${server_pids[$VICTIM]}"
  wait "${server_pids[$VICTIM]}" || true
} 2>/dev/null
killed=$(now_ms)
# Three requests in a row meet each instance once under round robin, so one
# of these POSTs goes to the dead instance first; refused before anything
# was sent, it is passed to the next. The same Idempotency-Key (as
# nginx.conf advises for POSTs) gives one run whichever instance answers.
after_task="tidy up the repository (lb-check after the kill)"
after_key="Idempotency-Key: lb-check-after-kill-$$"
after_run=$(create_run "$after_task" "$after_key")
for _ in 1 2; do
  again=$(call 200 POST /api/runs "{\"task\": \"$after_task\"}" "$after_key" | json 'd["id"]')
  [ "$again" = "$after_run" ] || fail "the same Idempotency-Key gave run $again after $after_run"
done
gets=0
for _ in $(seq 1 20); do
  call 200 GET "/api/runs?limit=5" >/dev/null
  gets=$((gets + 1))
done
# Followed and decided through nginx, on the two instances left.
watch_run "$after_run"
approve_all "$after_run"
watched_run_done "$after_run"
after_ms=$(($(now_ms) - killed))
survivors=()
for name in "${INSTANCES[@]}"; do
  [ "$name" = "$victim" ] || survivors+=("$name")
done
wait_for_instances "${survivors[*]}"
gone_ms=$(($(now_ms) - killed))

# What nginx saw: no 5xx, no too-large body passed on, every instance
# answered (the victim before its kill), and a POST that met the dead
# instance went on to a live one.
lb_summary=$(python3 - "$lb_dir/access.log" "${ports[@]}" <<'PY'
import sys

log, ports = sys.argv[1], sys.argv[2:]
names = {f"127.0.0.1:{p}": f"agent-server-{i + 1}" for i, p in enumerate(ports)}
answered = {name: 0 for name in names.values()}
decided = dict(answered)
total = retried = retried_posts = 0
errors = []
for line in open(log):
    status, method, uri, upstreams, _, _ = line.rstrip("\n").split("|")
    total += 1
    if status.startswith("5"):
        errors.append(line.strip())
    if status == "413" and upstreams != "-":
        errors.append(f"a body over the limit was passed to an instance: {line.strip()}")
    tried = [u.strip() for u in upstreams.split(",")]
    retried += len(tried) > 1
    retried_posts += len(tried) > 1 and method == "POST"
    if tried[-1] in names:
        answered[names[tried[-1]]] += 1
        decided[names[tried[-1]]] += uri.endswith("/resume")
if errors:
    print("lb-check: " + "; ".join(errors[:5]), file=sys.stderr)
    sys.exit(1)
if not all(answered.values()):
    print(f"lb-check: not every instance answered a request: {answered}", file=sys.stderr)
    sys.exit(1)
if not retried_posts:
    print("lb-check: no POST met the dead instance: nothing shows nginx passing them on", file=sys.stderr)
    sys.exit(1)
print(f"{total} requests through nginx, answered by "
      + ", ".join(f"{n} {answered[n]} ({decided[n]} decisions)" for n in answered)
      + f", {retried} passed on from the dead instance ({retried_posts} POST)")
PY
) || fail "nginx's access log does not show the expected traffic"

total_ms=$(($(now_ms) - started))
echo "lb-check: ok: 3 instances behind $("$nginx" -v 2>&1 | sed 's/^nginx version: //'); $RUNS runs completed after $phase1_decisions decisions in ${phase1_ms} ms;" \
  "after kill -9 of $victim: $gets/20 GETs 200, a new run completed after $((decisions - phase1_decisions)) decisions in ${after_ms} ms, the instance gone from /api/instances after ${gone_ms} ms;" \
  "$ws_count WebSockets received $ws_events events in order; $lb_summary; instances started in $((instances_up - started)) ms, total $((total_ms / 1000)).$(((total_ms % 1000) / 100)) s"
