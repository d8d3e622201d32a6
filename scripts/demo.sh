#!/usr/bin/env bash
# The local demo, end to end: a demo service, a real Prometheus scraping it,
# and rollbackd watching both. Then a bad deploy (v2 answers 5 % of requests
# with 500) and rollbackd's rule going pending, then firing.
# Everything runs on loopback and stops when the script ends.
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

[service]
name = "demo"
environment = "local"
base_url = "http://127.0.0.1:$svc_port"
TOML

echo "== $(ts) rules"
"$bin" --config "$work/rollbackd.toml" rules check
"$bin" --config "$work/rollbackd.toml" watch >"$work/rollbackd.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$rb_port/healthz"
echo "== $(ts) rollbackd watching (http://127.0.0.1:$rb_port/metrics); v1 is healthy, waiting 12 s for the windows to fill"
sleep 12
"$bin" --config "$work/rollbackd.toml" rules eval

echo
echo "== $(ts) deploying v2: 5 % of its requests fail"
curl -fs -X POST -H 'content-type: application/json' \
  -d '{"version":"v2","error_ratio":0.05}' "http://127.0.0.1:$svc_port/control" >/dev/null

fired=""
for _ in $(seq 1 60); do
  if grep -q "rule fired" "$work/rollbackd.log"; then fired=yes; break; fi
  sleep 1
done
echo "== $(ts) rollbackd's log:"
grep -E "rule state changed|rule fired|rollback trigger" "$work/rollbackd.log" | sed 's/^/   /'
echo
"$bin" --config "$work/rollbackd.toml" rules eval --rule HighErrorRate
echo
echo "== rollbackd's own metrics:"
curl -fs "http://127.0.0.1:$rb_port/metrics" | grep -E '^rollbackd_(rule_state|rule_value|rule_firing_events_total|triggers_total)' | sed 's/^/   /'
if [ -z "$fired" ]; then
  echo "demo: the rule did not fire within 60 s; see $work/rollbackd.log" >&2
  exit 1
fi
echo
echo "== $(ts) the bad deploy was detected. (Rolling it back is the rollback engine's job, next in line.)"
