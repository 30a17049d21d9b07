#!/usr/bin/env bash
# The main job (`make run`): set up, start the whole service with `idem up` (SQLite under
# ./.idem, a local Ray with its dashboard, the API, one worker), run the note's study sized
# for a CPU (specs/paper-cpu.yaml) with progress, print the summary and the paired
# comparison, write the report to ./report/, and stop what it started (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/setup.sh

export RAY_USAGE_STATS_ENABLED=0
export IDEM_DATA_DIR=${IDEM_DATA_DIR:-$PWD/.idem}
if [[ -z "${IDEM_PORT:-}" ]]; then  # 8000 unless something else holds it
  IDEM_PORT=$(.venv/bin/python -c 'import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 8000))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
fi
export IDEM_PORT
export IDEM_URL=http://127.0.0.1:$IDEM_PORT
SPEC=${SPEC:-specs/paper-cpu.yaml}
mkdir -p "$IDEM_DATA_DIR"
up_log=$IDEM_DATA_DIR/up.log

.venv/bin/idem up >"$up_log" 2>&1 &
up_pid=$!
stop_up() {
  if kill -0 "$up_pid" 2>/dev/null; then
    echo "run: stopping idem up (pid $up_pid)"
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
}
trap stop_up EXIT
trap 'exit 130' INT TERM

echo "run: starting idem up (log: $up_log)"
for _ in $(seq 300); do
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "run: idem up exited; its log:" >&2
    tail -30 "$up_log" >&2
    exit 1
  fi
  curl -sf "$IDEM_URL/health" >/dev/null 2>&1 && break
  sleep 1
done
curl -sf "$IDEM_URL/health" >/dev/null || { echo "run: the API did not come up" >&2; exit 1; }
grep "^idem up:" "$up_log" | sed 's/^/run: /'

out=$(mktemp)
.venv/bin/idem submit "$SPEC" --wait | tee "$out"
sweep_id=$(sed -n 's/^sweep \([0-9]*\) .*/\1/p' "$out" | head -1)
rm -f "$out"
[[ -n "$sweep_id" ]] || { echo "run: no sweep id from idem submit" >&2; exit 1; }

echo
echo "== paired comparison by seed: modified vs ordinary (idempotent error, then epochs)"
.venv/bin/idem compare "$sweep_id" --a modified --b ordinary --metric idempotent_error
.venv/bin/idem compare "$sweep_id" --a modified --b ordinary --metric epochs_to_threshold
echo
.venv/bin/idem report "$sweep_id" --out report
echo "run: open report/index.html (or $IDEM_URL/sweeps/$sweep_id/report while the service runs)"
stop_up
echo "run: done in $(( $(date +%s) - started )) s"
