#!/usr/bin/env bash
# Flood measurement (issue 8): N trusted SIPp calls with media on 127.0.0.2 against a release
# ivrd on 127.0.0.1 that trusts only 127.0.0.2, run twice — quiet, then while `ivrd-flood`
# sends RATE untrusted INVITEs a second (each with its own Call-ID) from 127.0.0.1 — and one
# table: trusted calls ok/failed, INVITE→200 time mean/max (SIPp -trace_rtt), ivrd's RTP spacing
# to the trusted callers (dumpcap + bench/rtp_spacing.py), flood packets sent and refused, and
# ivrd's CPU over the run. See bench/README.md.
#
# Usage: bench/flood.sh                       (N=100 calls of 30 s, flood 10,000/s)
#        N=20 DURATION_MS=5000 bench/flood.sh
#        IVRD_BIN=... FLOOD_BIN=... bench/flood.sh   (skip the build)
set -euo pipefail

N="${N:-100}"
DURATION_MS="${DURATION_MS:-30000}"
FLOOD_RATE="${FLOOD_RATE:-10000}"
CALL_RATE="${CALL_RATE:-50}"
TRUNK_IP=127.0.0.2
RTP_LOW="${RTP_LOW:-52000}"
RTP_HIGH=$(( RTP_LOW + 4 * N + 100 ))
SIPP_MP=$(( RTP_HIGH + 2 ))
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ivrd-flood.XXXXXX")"
IVRD_PID=""
CAP_PID=""
FLOOD_PID=""

stop_pid() {
    local pid="$1" sig="$2"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" "$pid"; wait "$pid" || true
    fi
}
stop_all() {
    stop_pid "$FLOOD_PID" TERM; FLOOD_PID=""
    stop_pid "$CAP_PID" INT; CAP_PID=""
    stop_pid "$IVRD_PID" TERM; IVRD_PID=""
}
trap stop_all EXIT

for tool in sipp dumpcap sox python3; do
    command -v "$tool" >/dev/null || { echo "flood: $tool not found" >&2; exit 2; }
done
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd ivrd-flood
CLK_TCK="$(getconf CLK_TCK)"
metric() { awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }' "$2"; }

# SIPp's media_stream scenario with the INVITE→200 time measured (rtd on the 200).
sed 's/<recv response="200" rrs="true">/<recv response="200" rrs="true" rtd="true">/' \
    "$ROOT/tests/sipp/media_stream.xml" >"$WORK/media_stream_rtd.xml"
grep -q 'rtd="true"' "$WORK/media_stream_rtd.xml" || { echo "flood: cannot add rtd" >&2; exit 1; }
sox -n -r 8000 -c 1 -e a-law -t raw "$WORK/caller.alaw" synth 10 sine 1000 gain -10

# One run: $1 = label, $2 = flood rate (0: none). Appends a row to $WORK/rows.
run_phase() {
    local label="$1" rate="$2" dir="$WORK/$1"
    mkdir -p "$dir"
    cp "$WORK/caller.alaw" "$dir/"
    local metrics_port
    metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    cat > "$dir/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
trusted = ["$TRUNK_IP/32"]
max_calls = 100000
drain_secs = 2

[media]
rtp_ports = "$RTP_LOW-$RTP_HIGH"

[dialplan]
path = "$ROOT/tests/dialplans/media/digits.toml"

[prompts]
dir = "$ROOT/prompts"

[storage]
dir = "$dir/storage"

[metrics]
listen = "127.0.0.1:$metrics_port"
TOML
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info}" \
        "$IVRD" run --config "$dir/ivrd.toml" >"$dir/ivrd.log" 2>&1 &
    IVRD_PID=$!
    local port=""
    for _ in $(seq 1 400); do
        if grep -q "dialplan loaded" "$dir/ivrd.log"; then
            port="$(sed -e 's/\x1b\[[0-9;]*m//g' "$dir/ivrd.log" \
                | sed -n 's/.*SIP listening.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' | head -n1)"
        fi
        [[ -n "$port" ]] && break
        kill -0 "$IVRD_PID" 2>/dev/null || { cat "$dir/ivrd.log" >&2; exit 1; }
        sleep 0.05
    done
    [[ -n "$port" ]] || { echo "flood: ivrd did not report its port" >&2; exit 1; }
    echo "== [$label] ivrd on 127.0.0.1:$port (pid $IVRD_PID), flood $rate/s"

    dumpcap -q -i lo -P -f "udp src portrange $RTP_LOW-$RTP_HIGH and udp[0:2] & 1 = 0 and udp dst port $SIPP_MP" \
        -w "$dir/rtp.pcap" >"$dir/dumpcap.out" 2>&1 &
    CAP_PID=$!
    local secs=$(( DURATION_MS / 1000 + N / CALL_RATE + 15 ))
    if [[ "$rate" -gt 0 ]]; then
        "$FLOOD" --mode sip --target "127.0.0.1:$port" --bind 127.0.0.1:0 --rate "$rate" \
            --secs "$secs" --stop-file "$dir/stop-flood" >"$dir/flood.out" 2>&1 &
        FLOOD_PID=$!
        # The flood is on before the first trusted call: wait until ivrd has refused some.
        for _ in $(seq 1 200); do
            curl -s "http://127.0.0.1:$metrics_port/metrics" >"$dir/metrics.txt" || true
            [[ "$(metric ivrd_sip_acl_rejections_total "$dir/metrics.txt")" -gt 1000 ]] && break
            sleep 0.05
        done
    fi
    local t0 c0 t1 c1
    t0="$(date +%s.%N)"; c0="$(cpu_ticks "$IVRD_PID")"
    set +e
    (cd "$dir" && sipp "127.0.0.1:$port" -sf "$WORK/media_stream_rtd.xml" \
        -i "$TRUNK_IP" -p 0 -mp "$SIPP_MP" -r "$CALL_RATE" -l "$N" -m "$N" -d "$DURATION_MS" \
        -nostdin -timeout "$(( DURATION_MS / 1000 + N / CALL_RATE + 60 ))s" -timeout_error \
        -trace_err -error_file "$dir/sipp-errors.log" \
        -trace_stat -stf "$dir/sipp-stat.csv" -fd 5 \
        -trace_rtt -rtt_freq 1 >"$dir/sipp.out" 2>&1)
    local sipp_rc=$?
    set -e
    t1="$(date +%s.%N)"; c1="$(cpu_ticks "$IVRD_PID")"
    curl -s "http://127.0.0.1:$metrics_port/metrics" >"$dir/metrics.txt" || true
    local flood_sent="-"
    if [[ -n "$FLOOD_PID" ]]; then
        touch "$dir/stop-flood"; wait "$FLOOD_PID" || true; FLOOD_PID=""
    fi
    stop_pid "$CAP_PID" INT; CAP_PID=""
    stop_pid "$IVRD_PID" TERM; IVRD_PID=""

    local ok failed
    read -r ok failed < <(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { last = $0 } END { split(last, v, ";"); print v[col["SuccessfulCall(C)"]] + 0, v[col["FailedCall(C)"]] + 0 }' \
        "$dir/sipp-stat.csv")
    local rtt
    rtt="$(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$2 ~ /^[0-9.]+$/ { s += $2; n++; if ($2 > m) m = $2 }
        END { if (n) printf "%.1f / %.1f", s / n, m; else print "- / -" }')"
    local spacing
    spacing="$(python3 "$ROOT/bench/rtp_spacing.py" "$dir/rtp.pcap" || echo "streams=- packets=- mean_ms=- max_ms=- out_of_20pm5=- seq_errors=-")"
    if [[ "$rate" -gt 0 ]]; then
        flood_sent="$(sed -n 's/^sent=\([0-9]*\) errors=\([0-9]*\) secs=\([0-9.]*\)/\1 in \3 s (\2 send errors)/p' "$dir/flood.out")"
    fi
    local acl dropped answered wall cpu_s cores
    acl="$(metric ivrd_sip_acl_rejections_total "$dir/metrics.txt")"
    dropped="$(metric ivrd_sip_messages_dropped_total "$dir/metrics.txt")"
    answered="$(metric ivrd_calls_answered_total "$dir/metrics.txt")"
    wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    cpu_s="$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')"
    cores="$(awk -v c="$cpu_s" -v w="$wall" 'BEGIN { printf "%.3f", c / w }')"
    local s_mean s_max s_out s_seq s_streams
    s_streams="$(sed -n 's/.*streams=\([^ ]*\).*/\1/p' <<<"$spacing")"
    s_mean="$(sed -n 's/.*mean_ms=\([^ ]*\).*/\1/p' <<<"$spacing")"
    s_max="$(sed -n 's/.*max_ms=\([^ ]*\).*/\1/p' <<<"$spacing")"
    s_out="$(sed -n 's/.*out_of_20pm5=\([^ ]*\).*/\1/p' <<<"$spacing")"
    s_seq="$(sed -n 's/.*seq_errors=\([^ ]*\).*/\1/p' <<<"$spacing")"
    echo "| $label | $ok/$failed | $answered | $rtt | $s_streams | $s_mean / $s_max | $s_out | $s_seq | $flood_sent | $acl / $dropped | $cpu_s s in $wall s ($cores) | $sipp_rc |" >>"$WORK/rows"
    echo "== [$label] sipp exit $sipp_rc, $spacing"
}

: >"$WORK/rows"
run_phase quiet 0
run_phase flood "$FLOOD_RATE"

echo "== result: $N trusted calls of $DURATION_MS ms at $CALL_RATE calls/s; flood $FLOOD_RATE INVITEs/s"
echo "| run | trusted ok/failed | ivrd answered | INVITE→200 ms mean / max | RTP streams | RTP Δ ms mean / max | Δ outside 20±5 ms | seq errors | flood sent | ivrd refused (acl) / dropped | ivrd CPU (cores) | sipp exit |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
cat "$WORK/rows"
echo "traces: $WORK"
