#!/usr/bin/env bash
# The local demo, end to end: a demo service (which also plays the deploy
# platform), a real Prometheus scraping it, and rollbackd watching both. Then
# a bad deploy (v2 answers 5 % of requests with 500): rollbackd's rule goes
# pending, fires, and rollbackd rolls back to v1, verifies the service healthy
# and records it. Everything runs on loopback and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
echo "== building rollbackd and the demo service"
cargo build --quiet --bin rollbackd --example demo_service
bin="$root/target/debug/rollbackd"
svc="$root/target/debug/examples/demo_service"

work=$(mktemp -d /tmp/rollbackd-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "== stopped everything; logs kept in $work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: $1 did not come up; see $work" >&2; exit 1
}
ts() { date +%H:%M:%S; }

svc_port=$(free_port); prom_port=$(free_port); rb_port=$(free_port)

"$svc" "127.0.0.1:$svc_port" >"$work/service.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$svc_port/health"

cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: ['127.0.0.1:$svc_port']
  - job_name: rollbackd
    static_configs:
      - targets: ['127.0.0.1:$rb_port']
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready"

cat >"$work/rollbackd.toml" <<TOML
[prometheus]
url = "http://127.0.0.1:$prom_port"
timeout = "2s"

[watch]
rule_paths = ["$root/examples/demo/rules.yml"]

[server]
listen = "127.0.0.1:$rb_port"

api_token = "demo-token"

[service]
name = "demo"
environment = "local"
base_url = "http://127.0.0.1:$svc_port"

[provider]
type = "command"
list = ["$root/examples/demo/deploys.sh", "list"]
status = ["$root/examples/demo/deploys.sh", "status"]
rollback = ["$root/examples/demo/deploys.sh", "rollback"]
cancel = ["$root/examples/demo/deploys.sh", "cancel"]
timeout = "10s"

[engine]
state_dir = "$work/state"
poll_interval = "500ms"

[blame]
# This Prometheus is seconds old: the baseline is the little it holds
# before the deploy (by default, the 30 minutes before go-live, ending a
# minute before it).
baseline = "5m"
baseline_gap = "2s"

[verify]
initial_wait = "2s"
retry_interval = "1s"
TOML
export DEMO_URL="http://127.0.0.1:$svc_port"

echo "== $(ts) rules"
"$bin" --config "$work/rollbackd.toml" rules check
"$bin" --config "$work/rollbackd.toml" watch >"$work/rollbackd.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$rb_port/healthz"
echo "== $(ts) rollbackd watching (http://127.0.0.1:$rb_port/metrics); v1 is healthy, waiting 12 s for the windows to fill"
sleep 12
"$bin" --config "$work/rollbackd.toml" rules eval

echo
echo "== $(ts) deploying v2: 5 % of its requests fail"
curl -fsS -X POST -H 'content-type: application/json' \
  -d '{"version":"v2","error_ratio":0.05}' "$DEMO_URL/deploy" >/dev/null
"$bin" --config "$work/rollbackd.toml" deployments list

done=""
for _ in $(seq 1 120); do
  if grep -qE "rollback succeeded|rollback failed" "$work/rollbackd.log"; then done=yes; break; fi
  sleep 1
done
echo
echo "== $(ts) what rollbackd did (its log):"
grep -E "rule state changed|rule fired|blame judged|rollback (started|phase finished|succeeded|failed)|would roll back" "$work/rollbackd.log" \
  | sed -E 's/^[^ ]+ +//' | cut -c1-220 | sed 's/^/   /'
echo
echo "== the audit trail (rollbackd history):"
"$bin" --config "$work/rollbackd.toml" history
echo
echo "== why it rolled back: the blame judgement's evidence (rollbackd history --show ID):"
last=$("$bin" --config "$work/rollbackd.toml" history --json --limit 1 \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
"$bin" --config "$work/rollbackd.toml" history --show "$last"
echo
echo "== deployments now:"
"$bin" --config "$work/rollbackd.toml" deployments list
echo
echo "== the deploy breaker (CI reads GET /api/v1/breaker before deploying):"
"$bin" --config "$work/rollbackd.toml" breaker status || true
echo
echo "== rollbackd's own metrics:"
curl -fs "http://127.0.0.1:$rb_port/metrics" \
  | grep -E '^rollbackd_(rule_state|rule_firing_events_total|rollbacks_total|rollback_duration_seconds_(sum|count)|breaker_state)' \
  | grep -v ' 0$' | sed 's/^/   /'
if ! grep -q "rollback succeeded" "$work/rollbackd.log"; then
  echo "demo: the bad deploy was not rolled back within 2 minutes; see $work/rollbackd.log" >&2
  exit 1
fi
echo
echo "== $(ts) the bad deploy was detected, rolled back to v1 and verified healthy."
