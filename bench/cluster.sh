#!/usr/bin/env bash
# idemsweep on a 3-node Ray cluster made of network namespaces on this machine (run as root).
#
#   sudo bench/cluster.sh            # spread sweep, then a sweep that loses node1 midway
#   sudo KILL_NODE=0 bench/cluster.sh   # only the spread sweep
#
# Topology (scripts/netns.sh): a bridge 10.231.7.1/24 in the root namespace; namespaces
# idem-head 10.231.7.2 (Ray head, `idem api`, `idem worker`), idem-node1 10.231.7.3
# (1 CPU, resource node1) and idem-node2 10.231.7.4 (1 CPU, --num-gpus 1). PostgreSQL runs
# in the root namespace on loopback and the bridge. Nothing leaves the bridge and loopback.
# Every Ray process runs with RAY_AUTH_MODE=disabled and RAY_USAGE_STATS_ENABLED=0: this is
# a throwaway cluster on a private bridge; never disable auth on a network you share.
#
# Prints where trials ran (the store's trial.node_ip and Ray's ray.nodes()), and, with
# KILL_NODE=1, kills every process of node1 by pid while one of its trials runs, then checks
# with SQL that the sweep succeeded with every trial and epoch row exactly once.
# Tear-down always runs (EXIT trap): processes in the namespaces are killed by pid (never
# `ray stop`, which would kill other Rays on this machine), namespaces and bridge deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "bench/cluster.sh: run as root (ip netns add)" >&2; exit 2; }

SEEDS=${SEEDS:-5}          # trials per sweep = 2 algorithms × SEEDS
EPOCHS=${EPOCHS:-150}      # epochs per trial of the spread sweep (a few seconds each)
LOSS_EPOCHS=${LOSS_EPOCHS:-300}
KILL_NODE=${KILL_NODE:-1}
IDEM=$PWD/.venv/bin/idem
PY=$PWD/.venv/bin/python

# shellcheck source=scripts/pg.sh
source scripts/pg.sh
# shellcheck source=scripts/netns.sh
source scripts/netns.sh
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0

WORK=$(mktemp -d /tmp/idem-cluster.XXXXXX)
cleanup() {
  local rc=$?
  set +e # every step of the tear-down runs, whatever fails
  if [[ $rc -ne 0 && -d $WORK ]]; then
    echo "== failed ($rc); the last lines of each log:"
    for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "-- $f"; tail -n 15 "$f"; }; done
  fi
  netns_down
  pg_stop
  rm -rf "$WORK"
  echo "== torn down: namespaces left: $(ip netns list | grep -c "^$NETNS_PREFIX" || true)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
sql() { "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q "$@"; }
sql1() { sql -tA -c "$1"; }

T0=$(now)
netns_up
PG_LISTEN=$(netns_ip bridge) PG_TRUST=$NETNS_SUBNET.0/24 pg_start
HEAD=$(netns_ip head)
NODE1=$(netns_ip node1)
export IDEM_DATABASE_URL="postgresql+psycopg://postgres@$(netns_ip bridge):$PG_PORT/postgres"
"$IDEM" db upgrade

T=$(now)
netns_ray_head >"$WORK/ray-head.log" 2>&1
# One after the other: two raylets registering at once on a loaded 2-core machine can
# miss ray start's 30 s registration window.
netns_ray_node node1 --resources '{"node1": 1}' >"$WORK/ray-node1.log" 2>&1
netns_ray_node node2 --num-gpus 1 >"$WORK/ray-node2.log" 2>&1
echo "== ray: head $HEAD:6379, node1 $NODE1, node2 $(netns_ip node2) up in $(since "$T") s"

TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
export IDEM_API_TOKENS="[\"$TOKEN\"]" IDEM_HEARTBEAT_INTERVAL_S=1 IDEM_REPORT_EVERY=5
netns_exec head "$IDEM" api --host "$HEAD" --port 8000 >"$WORK/api.log" 2>&1 &
netns_exec head "$IDEM" worker --ray-address "$HEAD:6379" >"$WORK/worker.log" 2>&1 &
export IDEM_URL="http://$HEAD:8000" IDEM_TOKEN=$TOKEN
"$PY" - "$IDEM_URL/health" <<'EOF'
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for _ in range(120):
    try:
        opener.open(sys.argv[1], timeout=2)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("the API did not come up")
EOF
echo "== api $IDEM_URL and worker up; everything in $(since "$T0") s"

write_spec() {  # write_spec NAME FIRST_SEED EPOCHS -> path
  local path=$WORK/$1.json
  "$PY" - "$1" "$2" "$3" "$SEEDS" >"$path" <<'EOF'
import json, sys
name, first, epochs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({
    "name": name, "architectures": ["N1"], "algorithms": ["ordinary", "modified"],
    "learning_rates": [0.05], "batches": [{"samples": 1000, "batch_size": 100}],
    "seeds": list(range(first, first + n)), "epochs": epochs, "eval_samples": 200,
    "pack": False, "resources": {"cpu": 1},
}))
EOF
  echo "$path"
}
submit() { "$IDEM" submit "$1" | awk '/^sweep /{print $2; exit}'; }
wait_final() {  # wait_final SWEEP_ID
  local s
  for _ in $(seq 1 600); do
    s=$(sql1 "SELECT status FROM sweep WHERE id = $1")
    [[ $s == succeeded || $s == failed || $s == cancelled ]] && { echo "$s"; return 0; }
    sleep 0.5
  done
  echo "timeout"
}
where() {  # where SWEEP_ID: trials per node, from the store
  sql -c "SELECT node_ip, count(*) AS trials, sum(attempts) AS attempts,
                 string_agg(status::text, ',' ORDER BY id) AS statuses
          FROM trial WHERE sweep_id = $1 GROUP BY node_ip ORDER BY node_ip"
}

echo "== sweep 1: $((2 * SEEDS)) trials × $EPOCHS epochs, resources cpu: 1"
T=$(now)
ID=$(submit "$(write_spec spread 0 "$EPOCHS")")
echo "sweep $ID: $(wait_final "$ID") in $(since "$T") s; where its trials ran (trial.node_ip):"
where "$ID"
echo "== ray.nodes() from a driver in the head namespace:"
netns_exec head "$PY" - "$HEAD:6379" <<'EOF'
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for n in ray.nodes():
    res = {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU", "node1")}
    print(f"  {n['NodeManagerAddress']:<12} alive={n['Alive']!s:<5} {res}")
EOF

if [[ $KILL_NODE == 1 ]]; then
  echo "== sweep 2: $((2 * SEEDS)) trials × $LOSS_EPOCHS epochs; node1 is killed midway"
  T=$(now)
  ID=$(submit "$(write_spec node-loss 1000 "$LOSS_EPOCHS")")
  for _ in $(seq 1 600); do
    [[ $(sql1 "SELECT count(*) FROM trial t WHERE sweep_id = $ID AND status = 'running'
               AND node_ip = '$NODE1' AND EXISTS (SELECT 1 FROM epoch_metric e
               WHERE e.trial_id = t.id)") -gt 0 ]] && break
    sleep 0.2
  done
  echo "killing node1's processes (pids $(netns_pids node1 | tr '\n' ' ')) after $(since "$T") s"
  netns_kill node1
  T=$(now)
  echo "sweep $ID: $(wait_final "$ID"), $(since "$T") s after the kill; trials per node:"
  where "$ID"
  echo "epoch rows per trial (expect $LOSS_EPOCHS rows, epochs 1..$LOSS_EPOCHS, once each):"
  sql -c "SELECT count(*) AS trials, min(n) AS min_rows, max(n) AS max_rows,
                 sum(n - d) AS duplicate_rows
          FROM (SELECT t.id, count(e.epoch) AS n, count(DISTINCT e.epoch) AS d
                FROM trial t LEFT JOIN epoch_metric e ON e.trial_id = t.id
                WHERE t.sweep_id = $ID GROUP BY t.id) per_trial"
fi
