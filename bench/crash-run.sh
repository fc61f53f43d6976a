#!/usr/bin/env bash
# kill -9 during a call run (issue 8): a release ivrd on 127.0.0.1 takes CALLS calls of the
# issue-7 workload from ivrd-loadgen while it is killed with SIGKILL at KILLS random moments
# (drawn from SEED, printed) and started again each time on the same storage and ports. After the
# run and the outbox drain, bench/crash_check.py requires: every call the caller saw answered
# (200 OK) has exactly one case (matched by call_id), every case is schema-valid, and the intake
# receiver saw every case's Idempotency-Key; keys POSTed more than once are counted.
#
# Usage: bench/crash-run.sh                         # 500 calls, 4 kills
#   SEED=1234 KILLS=5 CALLS=500 RATE=10 bench/crash-run.sh
#   IVRD_BIN=... LOADGEN_BIN=... skip the build.
# Needs python3 with jsonschema (Debian python3-jsonschema). See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLS="${CALLS:-500}"
RATE="${RATE:-10}"
CALL_SECS="${CALL_SECS:-20}"
KEYS="${KEYS:-2s:2,18s:#}"
KILLS="${KILLS:-4}"
RTP_PORTS="${RTP_PORTS:-10000-29999}"   # another range lets it run beside bench/soak.sh
SEED="${SEED:-$(( $(date +%s) % 100000 ))}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd ivrd-loadgen

WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ivrd-crash.XXXXXX")}"
mkdir -p "$WORK/bodies"
echo "== work dir $WORK, seed $SEED" >&2

IVRD_PID=""; SINK_PID=""; LG_PID=""
cleanup() {
    [[ -n "$LG_PID" ]] && kill "$LG_PID" 2>/dev/null || true
    [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null || true
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"; wait "$IVRD_PID" || true
    fi
}
trap cleanup EXIT

python3 "$ROOT/bench/intake_sink.py" "$WORK/sink.port" "$WORK/sink.keys" "$WORK/bodies" &
SINK_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK/sink.port" ]] && break; sleep 0.05; done

# Fixed ports, so that callers reach the restarted daemon where they reached the killed one.
read -r SIP_PORT METRICS_PORT < <(python3 -c '
import socket
def both():
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
        t = socket.socket(); 
        try:
            t.bind(("127.0.0.1", u.getsockname()[1])); return u.getsockname()[1]
        except OSError:
            pass
t = socket.socket(); t.bind(("127.0.0.1", 0))
print(both(), t.getsockname()[1])')
SIP="127.0.0.1:$SIP_PORT"; METRICS="127.0.0.1:$METRICS_PORT"
cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["$SIP"]
max_calls = $(( CALLS + 100 ))
drain_secs = 2

[media]
rtp_ports = "$RTP_PORTS"

[dialplan]
path = "$ROOT/dialplans/12345.toml"

[prompts]
dir = "$ROOT/prompts"

[storage]
dir = "$WORK/var"

[intake]
url = "http://127.0.0.1:$(cat "$WORK/sink.port")/cases"
secret = "crash"

[metrics]
listen = "$METRICS"
TOML

metric() { curl -sf --max-time 5 "http://$METRICS/metrics" | awk -v n="$1" '$1 == n { print $2 }' || true; }
START=0
start_ivrd() {
    START=$(( START + 1 ))
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime=info}" \
        "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd-$START.log" 2>&1 &
    IVRD_PID=$!
    for _ in $(seq 1 400); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$METRICS/readyz" || true)" == 200 ]] && return 0
        kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd-$START.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "ivrd not ready" >&2; exit 1
}

# Kill moments: KILLS distinct seconds (with ms) within the time calls are being placed and up.
SPAN="$(awk -v c="$CALLS" -v r="$RATE" -v d="$CALL_SECS" 'BEGIN { printf "%d", c / r + d / 2 }')"
mapfile -t KILL_AT < <(awk -v s="$SEED" -v k="$KILLS" -v span="$SPAN" \
    'BEGIN { srand(s); for (i = 0; i < k; i++) printf "%.3f\n", 3 + rand() * (span - 3) }' | sort -n)
echo "== $CALLS calls at $RATE/s, ${CALL_SECS} s each; kill -9 at ${KILL_AT[*]} s (seed $SEED)" >&2

start_ivrd
T0="$(date +%s.%N)"
"$LOADGEN" --target "$SIP" --calls "$CALLS" --rate "$RATE" --duration "${CALL_SECS}s" \
    --keys "$KEYS" --answered-file "$WORK/answered.txt" >"$WORK/loadgen.out" 2>&1 &
LG_PID=$!
for at in "${KILL_AT[@]}"; do
    now="$(date +%s.%N)"
    wait_s="$(awk -v a="$at" -v t0="$T0" -v n="$now" 'BEGIN { w = a - (n - t0); print (w > 0 ? w : 0) }')"
    sleep "$wait_s"
    UP="$(metric ivrd_calls_active)"
    kill -9 "$IVRD_PID"; wait "$IVRD_PID" 2>/dev/null || true
    echo "   kill -9 at $(awk -v t0="$T0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - t0 }') s with ${UP:-?} calls up; restarting" >&2
    start_ivrd
done
wait "$LG_PID" || true; LG_PID=""
echo "   loadgen: $(tail -n1 "$WORK/loadgen.out")" >&2

# Drain: no call up and nothing pending in the outbox (bounded).
for _ in $(seq 1 180); do
    [[ "$(metric ivrd_calls_active)" == 0 && "$(metric ivrd_outbox_pending_cases)" == 0 ]] && break
    sleep 1
done
echo "   after drain: calls_active=$(metric ivrd_calls_active) outbox_pending=$(metric ivrd_outbox_pending_cases) dead=$(metric ivrd_outbox_dead_cases)" >&2
echo "   interrupted calls recovered at start-up: $(cat "$WORK"/ivrd-*.log | grep -c 'call interrupted by a restart' || true)" >&2
python3 "$ROOT/bench/crash_check.py" "$WORK/answered.txt" "$WORK/sink.keys" "$WORK/bodies" \
    "$WORK/var" "$ROOT/schemas/case.v1.json"
