#!/usr/bin/env bash
# SIP load run: a release build of ivrd on 127.0.0.1 (a free port), SIPp placing calls with the
# basic-call scenario at RATE calls/s until CALLS calls are done, each held DURATION_MS.
# Prints successful and failed calls; exits non-zero on any failed call. See bench/README.md.
#
# Usage: bench/sip-load.sh            (200 calls/s, 6000 calls, 1000 ms per call)
#        RATE=50 CALLS=500 bench/sip-load.sh
set -euo pipefail

RATE="${RATE:-200}"
CALLS="${CALLS:-6000}"
DURATION_MS="${DURATION_MS:-1000}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCENARIO="$ROOT/tests/sipp/basic_call.xml"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ivrd-load.XXXXXX")"
IVRD_PID=""

stop_ivrd() {
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"
        wait "$IVRD_PID" || true
    fi
    IVRD_PID=""
}
trap stop_ivrd EXIT

command -v sipp >/dev/null || { echo "sip-load: sipp not found (Debian package sip-tester)" >&2; exit 2; }

# IVRD_BIN=path skips the build and uses that binary (e.g. to try the script on a debug build).
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd

# Port 0: the kernel picks a free port and ivrd logs it once it is bound (and so ready).
cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
max_calls = 100000
drain_secs = 2

[media]
rtp_ports = "20000-59999"

[metrics]
listen = "127.0.0.1:0"

[storage]
dir = "$WORK/storage"
TOML

echo "== starting ivrd (log: $WORK/ivrd.log)"
NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info}" \
    "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd.log" 2>&1 &
IVRD_PID=$!

PORT=""
for _ in $(seq 1 200); do
    PORT="$(sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/ivrd.log" \
        | sed -n 's/.*SIP listening.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' | head -n1)"
    [[ -n "$PORT" ]] && break
    kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd.log" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$PORT" ]] || { echo "sip-load: ivrd did not report its port" >&2; cat "$WORK/ivrd.log" >&2; exit 1; }
echo "== ivrd listening on 127.0.0.1:$PORT (pid $IVRD_PID)"

echo "== sipp: $CALLS calls at $RATE calls/s, $DURATION_MS ms each"
START=$(date +%s)
set +e
sipp "127.0.0.1:$PORT" -sf "$SCENARIO" -i 127.0.0.1 -p 0 \
    -r "$RATE" -m "$CALLS" -d "$DURATION_MS" \
    -nostdin -timeout "$(( CALLS / RATE + 60 ))s" -timeout_error \
    -trace_err -error_file "$WORK/sipp-errors.log" \
    -trace_stat -stf "$WORK/sipp-stat.csv" -fd 5 \
    >"$WORK/sipp.out" 2>&1
SIPP_RC=$?
set -e
END=$(date +%s)

# SuccessfulCall(C) / FailedCall(C) from the last statistics line (cumulative counts).
read -r OK FAILED < <(awk -F';' '
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "SuccessfulCall(C)") s = i; if ($i == "FailedCall(C)") f = i } next }
    NF > 1 { ok = $s; failed = $f }
    END { print ok + 0, failed + 0 }' "$WORK/sipp-stat.csv")

stop_ivrd
echo "== result"
echo "successful calls: $OK"
echo "failed calls:     $FAILED"
echo "sipp exit status: $SIPP_RC"
echo "wall time:        $(( END - START )) s"
echo "traces:           $WORK"
if [[ "$SIPP_RC" -ne 0 || "$FAILED" -ne 0 || "$OK" -ne "$CALLS" ]]; then
    echo "sip-load: FAILED" >&2
    head -n 40 "$WORK/sipp-errors.log" >&2 2>/dev/null || true
    exit 1
fi
echo "cases spooled:    $(find "$WORK/storage/outbox/pending" -name '*.json' 2>/dev/null | wc -l)"
echo "recordings:       $(find "$WORK/storage/recordings" -name '*.wav' 2>/dev/null | wc -l)"
echo "sip-load: OK"
