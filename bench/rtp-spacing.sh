#!/usr/bin/env bash
# RTP pacing check: ivrd answers N concurrent SIPp calls that stream caller audio; tshark
# captures on loopback what ivrd sends from its RTP ports, and the script reports the streams,
# the largest and mean gap between consecutive packets of a stream, and sequence errors. It
# exits non-zero unless there are N streams, no sequence error, and every gap is at most
# MAX_DELTA_MS (25 ms: the 20 ms frame clock plus scheduling slack). See bench/README.md.
#
# Usage: bench/rtp-spacing.sh N          (N concurrent calls of DURATION_MS, default 20000)
#        IVRD_BIN=target/debug/ivrd bench/rtp-spacing.sh 1     (no release build)
set -euo pipefail

N="${1:?usage: bench/rtp-spacing.sh N}"
DURATION_MS="${DURATION_MS:-20000}"
MAX_DELTA_MS="${MAX_DELTA_MS:-25}"
RTP_LOW="${RTP_LOW:-52000}"
RTP_HIGH=$(( RTP_LOW + 4 * N + 100 ))
# SIPp sends and receives every call's RTP on this one port (SIPp 3.6 `[media_port]`).
SIPP_MP=$(( RTP_HIGH + 2 ))
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ivrd-rtp-spacing.XXXXXX")"
IVRD_PID=""
TSHARK_PID=""

stop_all() {
    if [[ -n "$TSHARK_PID" ]] && kill -0 "$TSHARK_PID" 2>/dev/null; then
        kill -INT "$TSHARK_PID"; wait "$TSHARK_PID" || true
    fi
    TSHARK_PID=""
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"; wait "$IVRD_PID" || true
    fi
    IVRD_PID=""
}
trap stop_all EXIT

for tool in sipp tshark sox; do
    command -v "$tool" >/dev/null || { echo "rtp-spacing: $tool not found" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd

# The digits test plan: a silent caller hears one prompt and waits 30 s at a collect node, so
# a 20 s call is all media and no transfer. The capture filter keeps packets from ivrd's RTP
# range (even ports; RTCP is on the odd ones) to SIPp's media port, so other programs' RTP on
# the same machine is not counted.
cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
max_calls = 100000
drain_secs = 2

[media]
rtp_ports = "$RTP_LOW-$RTP_HIGH"

[dialplan]
path = "$ROOT/tests/dialplans/media/digits.toml"

[prompts]
dir = "$ROOT/prompts"

[storage]
dir = "$WORK/storage"

[metrics]
listen = "127.0.0.1:0"
TOML

echo "== starting ivrd (log: $WORK/ivrd.log)"
NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info}" \
    "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd.log" 2>&1 &
IVRD_PID=$!
PORT=""
for _ in $(seq 1 400); do
    if grep -q "dialplan loaded" "$WORK/ivrd.log"; then
        PORT="$(sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/ivrd.log" \
            | sed -n 's/.*SIP listening.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' | head -n1)"
    fi
    [[ -n "$PORT" ]] && break
    kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd.log" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$PORT" ]] || { echo "rtp-spacing: ivrd did not report its port" >&2; exit 1; }
echo "== ivrd listening on 127.0.0.1:$PORT (pid $IVRD_PID), RTP $RTP_LOW-$RTP_HIGH"

# What the callers say: 10 s of a 1 kHz tone in A-law, looped by SIPp's rtp_stream.
sox -n -r 8000 -c 1 -e a-law -t raw "$WORK/caller.alaw" synth 10 sine 1000 gain -10

echo "== tshark on lo (capture: $WORK/ivrd-rtp.pcap)"
tshark -i lo -f "udp src portrange $RTP_LOW-$RTP_HIGH and udp[0:2] & 1 = 0 and udp dst port $SIPP_MP" \
    -w "$WORK/ivrd-rtp.pcap" >"$WORK/tshark.out" 2>&1 &
TSHARK_PID=$!
for _ in $(seq 1 200); do
    grep -q "Capturing on" "$WORK/tshark.out" && break
    sleep 0.05
done
grep -q "Capturing on" "$WORK/tshark.out" || { cat "$WORK/tshark.out" >&2; exit 1; }

# All N calls are placed within N/RATE seconds and held DURATION_MS, so they overlap.
RATE=$(( N < 50 ? N : 50 ))
echo "== sipp: $N calls at $RATE calls/s, $DURATION_MS ms each"
set +e
(cd "$WORK" && sipp "127.0.0.1:$PORT" -sf "$ROOT/tests/sipp/media_stream.xml" \
    -i 127.0.0.1 -p 0 -mp "$SIPP_MP" -r "$RATE" -l "$N" -m "$N" -d "$DURATION_MS" \
    -nostdin -timeout "$(( DURATION_MS / 1000 + N / RATE + 60 ))s" -timeout_error \
    -trace_err -error_file "$WORK/sipp-errors.log" \
    -trace_stat -stf "$WORK/sipp-stat.csv" -fd 5 >"$WORK/sipp.out" 2>&1)
SIPP_RC=$?
set -e
stop_all

# Per stream (SSRC), in capture order: the gap to the previous packet and whether the sequence
# number is the previous one plus one (mod 2^16).
tshark -r "$WORK/ivrd-rtp.pcap" --enable-heuristic rtp_udp -Y rtp \
    -T fields -e rtp.ssrc -e rtp.seq -e frame.time_epoch >"$WORK/rtp.tsv"
read -r STREAMS PACKETS MAX_DELTA MEAN_DELTA SEQ_ERRORS < <(awk -F'\t' '
    {
        if ($1 in last_t) {
            d = ($3 - last_t[$1]) * 1000; sum += d; gaps++
            if (d > max) max = d
            if ($2 != (last_s[$1] + 1) % 65536) errors++
        } else streams++
        last_t[$1] = $3; last_s[$1] = $2; packets++
    }
    END { printf "%d %d %.3f %.3f %d\n", streams, packets, max, gaps ? sum / gaps : 0, errors }
' "$WORK/rtp.tsv")

echo "== tshark -z rtp,streams (first lines)"
# Written whole first: `tee | head` would cut the report short when head exits.
tshark -r "$WORK/ivrd-rtp.pcap" --enable-heuristic rtp_udp -q -z rtp,streams >"$WORK/rtp-streams.txt"
head -n 8 "$WORK/rtp-streams.txt"
echo "== result"
echo "calls (N):          $N"
echo "streams:            $STREAMS"
echo "packets:            $PACKETS"
echo "max delta:          $MAX_DELTA ms (limit $MAX_DELTA_MS ms)"
echo "mean delta:         $MEAN_DELTA ms"
echo "sequence errors:    $SEQ_ERRORS"
echo "sipp exit status:   $SIPP_RC"
echo "traces:             $WORK"
if [[ "$SIPP_RC" -ne 0 || "$STREAMS" -ne "$N" || "$SEQ_ERRORS" -ne 0 ]] \
    || awk -v m="$MAX_DELTA" -v l="$MAX_DELTA_MS" 'BEGIN { exit !(m > l) }'; then
    echo "rtp-spacing: FAILED" >&2
    exit 1
fi
echo "rtp-spacing: OK"
