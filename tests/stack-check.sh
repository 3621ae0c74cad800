#!/usr/bin/env bash
# Checks the observability stack's files with what runs on this machine:
# promtool on the Prometheus config, docker-compose's own validation of the
# compose file (no engine needed), every dashboard as JSON, and every PromQL
# expression of the dashboards run against a real Prometheus that scraped an
# agent-server after a demo workload (tokens, a tool, an approval and a
# rejection), each required to return data.
#
# Needs target/debug/agent-server (built by `cargo test`) and, on a fresh
# Debian machine as root, installs prometheus, docker-compose and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/server.sh

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
install_missing stack-check "${missing[@]}"

promtool check config infra/prometheus/prometheus.yaml
docker-compose -f docker-compose.yaml config -q
for dashboard in infra/grafana/dashboards/*.json; do
  python3 -m json.tool "$dashboard" >/dev/null
done
echo "stack-check: prometheus config, compose file and dashboard JSON are valid"

work=$(mktemp -d /tmp/agent-server-stack-check.XXXXXX)
chmod 755 "$work"
prometheus_pid=""
cleanup() {
  [ -n "$prometheus_pid" ] && kill "$prometheus_pid" 2>/dev/null || true
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

# The server: embedded PostgreSQL, the scripted model.
start_server "$work"

# The admin token the first start wrote, as a new user finds it.
token=$(cat "$work/data/admin-token")
api() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
run_field() { api "$base/api/runs/$1" | json "$2"; }
wait_for() { # run, python expression over the run `d`, what
  for _ in $(seq 1 300); do
    [ "$(run_field "$1" "$2")" = "True" ] && return 0
    sleep 0.1
  done
  echo "stack-check: timed out waiting for $3" >&2
  exit 1
}

# The demo workload: the orchestrator hands the task to the coding agent,
# which asks to run a command (approved) and to write a file (rejected).
run=$(api "$base/api/runs" -d '{"task": "tidy up the repository"}' | json 'd["id"]')
wait_for "$run" 'd["status"] == "waiting_approval"' "the shell approval"
approval=$(run_field "$run" 'd["pending_approval"]["approval_id"]')
api "$base/api/runs/$run/resume" -d "{\"approval_id\": \"$approval\", \"decision\": \"approved\"}" >/dev/null
wait_for "$run" 'd["pending_approval"] is not None and d["pending_approval"]["tool"] == "write_file"' "the write approval"
approval=$(run_field "$run" 'd["pending_approval"]["approval_id"]')
api "$base/api/runs/$run/resume" -d "{\"approval_id\": \"$approval\", \"decision\": \"rejected\", \"feedback\": \"not today\"}" >/dev/null
wait_for "$run" 'd["status"] == "completed"' "the run to complete"
# A second run left waiting, so the pending gauges have something to show.
api "$base/api/runs" -d '{"task": "tidy up again"}' >/dev/null

# A real Prometheus scraping the server every second.
target=${base#http://}
cat >"$work/prometheus.yaml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: agent-server
    static_configs:
      - targets: ["$target"]
YAML
prometheus --config.file="$work/prometheus.yaml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:19091 >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
# Rates need two samples of every series: wait for a few scrapes.
for _ in $(seq 1 300); do
  scrapes=$(curl -fsS 'http://127.0.0.1:19091/api/v1/query' --data-urlencode 'query=count_over_time(up{job="agent-server"}[1m])' 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null || echo 0)
  [ "${scrapes%.*}" -ge 4 ] 2>/dev/null && break
  sleep 0.2
done
python3 infra/check-dashboards.py http://127.0.0.1:19091 infra/grafana/dashboards --require-data
