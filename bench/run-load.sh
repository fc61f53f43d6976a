#!/usr/bin/env bash
# Load table of issue 7: for each CONCURRENCY, a release ivrd on 127.0.0.1 takes calls from
# ivrd-loadgen (INVITE PCMU + telephone-event, caller audio for the whole call, two RFC 4733 keys,
# BYE after DURATION) so that CONCURRENCY calls are up at once, and the script measures:
#   ivrd CPU (utime+stime from /proc/PID/stat) per call-second in a steady window,
#   RSS per call (VmRSS in the window minus idle, / calls up), failed calls,
#   RTP spacing of what ivrd sends (a dumpcap capture of ~100 streams after the CPU window,
#   bench/rtp_spacing.py),
#   and the load generator's (or SIPp's) own CPU per call-second in the same window.
# Prints one table row per level. See bench/README.md.
#
# Usage: bench/run-load.sh 50 300 [1000 ...]
#   DURATION=20 KEYS="2s:2,18s:#" TRANSFER="486 Busy Here" bench/run-load.sh 300
#   IVRD_BIN=... LOADGEN_BIN=... skip the build.
#   DRIVER=sipp bench/run-load.sh 300   (the same workload from SIPp, for the cross-check)
#   PROFILE=1 bench/run-load.sh 300      (perf record of ivrd in the window: WORK/perf.data)
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 CONCURRENCY..." >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-20}"
KEYS="${KEYS:-2s:2,18s:#}"
TRANSFER="${TRANSFER:-486 Busy Here}"
CAPTURE_SECS="${CAPTURE_SECS:-5}"
DRIVER="${DRIVER:-loadgen}"   # or sipp (bench/sipp_ivr_call.xml)
RTP_LOW=10000
RTP_HIGH=29999
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HZ="$(getconf CLK_TCK)"

if [[ -z "${IVRD_BIN:-}" || -z "${LOADGEN_BIN:-}" ]]; then
    echo "== building release binaries" >&2
    (cd "$ROOT" && cargo build --release --quiet --bins)
fi
IVRD="${IVRD_BIN:-$TARGET_DIR/release/ivrd}"
LOADGEN="${LOADGEN_BIN:-$TARGET_DIR/release/ivrd-loadgen}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

IVRD_PID=""
CAP_PID=""
cleanup() {
    [[ -n "$CAP_PID" ]] && kill "$CAP_PID" 2>/dev/null || true
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"; wait "$IVRD_PID" || true
    fi
    IVRD_PID=""
}
trap cleanup EXIT

cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# Calls up now: each call holds an RTP and an RTCP socket (src/runtime/ports.rs).
active_calls() { echo $(( ($(fd_count "$IVRD_PID") - FDS_IDLE) / 2 )); }
log_addr() { # the first address logged on a line matching $1
    sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/ivrd.log" | grep "$1" | grep -o '127\.0\.0\.1:[0-9]*' | head -n1 || true
}

printf '| calls up | calls/s | ivrd CPU ms per call-s | ivrd cores | RSS KiB/call | failed/attempted | recordings | RTP mean Δ ms | RTP max Δ ms | outside 20±5 ms | seq errors | %s CPU ms per call-s |\n' "$DRIVER"
printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'

for C in "$@"; do
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/ivrd-bench.XXXXXX")"
    RATE="$(awk -v c="$C" -v d="$DURATION" 'BEGIN { printf "%.3f", c / d }')"
    CALLS=$(( 2 * C ))
    cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
max_calls = $(( 2 * C + 100 ))
drain_secs = 2

[media]
rtp_ports = "$RTP_LOW-$RTP_HIGH"

[dialplan]
path = "$ROOT/dialplans/12345.toml"

[prompts]
dir = "$ROOT/prompts"

[storage]
dir = "$WORK/var"

[metrics]
listen = "127.0.0.1:0"
TOML
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info,ivrd::runtime::http=info}" \
        "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd.log" 2>&1 &
    IVRD_PID=$!
    SIP=""
    for _ in $(seq 1 200); do
        SIP="$(log_addr 'SIP listening')"
        [[ -n "$SIP" ]] && break
        kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd.log" >&2; exit 1; }
        sleep 0.05
    done
    [[ -n "$SIP" ]] || { echo "ivrd did not report its address" >&2; cat "$WORK/ivrd.log" >&2; exit 1; }
    sleep 1
    RSS_IDLE="$(rss_kib "$IVRD_PID")"; FDS_IDLE="$(fd_count "$IVRD_PID")"

    if [[ "$DRIVER" == sipp ]]; then
        sox -n -r 8000 -c 1 -e u-law "$WORK/tone.wav" synth 1 sine 440 vol 0.15
        # SIPp does not expand -key values inside <exec>: write the tone's path in.
        sed "s|\[tone\]|$WORK/tone.wav|" "$ROOT/bench/sipp_ivr_call.xml" >"$WORK/scenario.xml"
        sipp "$SIP" -sf "$WORK/scenario.xml" \
            -i 127.0.0.1 -mi 127.0.0.1 -p 0 -mp 40000 \
            -r "$C" -rp "$(( DURATION * 1000 ))" -m "$CALLS" -nostdin \
            -timeout "$(( 3 * DURATION + 30 ))s" -trace_stat -stf "$WORK/sipp-stat.csv" -fd 60 \
            >"$WORK/sipp.out" 2>&1 &
    else
        "$LOADGEN" --target "$SIP" --calls "$CALLS" --rate "$RATE" --duration "${DURATION}s" \
            --keys "$KEYS" --transfer-status "$TRANSFER" >"$WORK/loadgen.out" 2>&1 &
    fi
    LG_PID=$!
    # Steady window: every call started in [t-DURATION, t] is up, so from DURATION+2 s on
    # C calls are up until the last call starts at 2·DURATION.
    sleep $(( DURATION + 2 ))
    if [[ -n "${PROFILE:-}" ]]; then
        # Sampled profile of ivrd over the CPU window (its overhead shows in that row's CPU).
        perf record -q -e cpu-clock -F 499 -g -p "$IVRD_PID" -o "$WORK/perf.data" \
            -- sleep "$(( DURATION - 4 - CAPTURE_SECS ))" >/dev/null 2>&1 &
    fi
    T0=$(date +%s.%N); CPU0="$(cpu_ticks "$IVRD_PID")"; LG0="$(cpu_ticks "$LG_PID")"
    WINDOW=$(( DURATION - 4 - CAPTURE_SECS ))
    SUM_ACTIVE=0; SAMPLES=0; RSS_MAX=0
    for _ in $(seq 1 "$WINDOW"); do
        sleep 1
        A="$(active_calls)"; SUM_ACTIVE=$(( SUM_ACTIVE + ${A:-0} )); SAMPLES=$(( SAMPLES + 1 ))
        R="$(rss_kib "$IVRD_PID")"; (( R > RSS_MAX )) && RSS_MAX=$R
    done
    T1=$(date +%s.%N); CPU1="$(cpu_ticks "$IVRD_PID")"; LG1="$(cpu_ticks "$LG_PID")"
    # Capture after the CPU window so dumpcap's own work does not count against ivrd.
    # About 100 of ivrd's streams (every Nth RTP port pair), so that dumpcap stays light even
    # at thousands of calls.
    EVERY=$(( C > 100 ? C / 100 : 1 ))
    dumpcap -q -i lo -P -f "udp src portrange $RTP_LOW-$RTP_HIGH and udp[0:2] % $(( 2 * EVERY )) = 0" \
        -a "duration:$CAPTURE_SECS" \
        -w "$WORK/rtp.pcap" 2>/dev/null &
    CAP_PID=$!
    wait "$CAP_PID" || true; CAP_PID=""
    wait "$LG_PID" || true
    if [[ "$DRIVER" == sipp ]]; then
        OK="$(awk -F';' 'NR==1 { for (i=1;i<=NF;i++) { if ($i=="SuccessfulCall(C)") s=i; if ($i=="FailedCall(C)") f=i } } END { print $s, $f }' "$WORK/sipp-stat.csv")"
        LG="attempted=$CALLS failed=${OK#* }"
    else
        LG="$(tail -n1 "$WORK/loadgen.out")"
    fi
    cleanup

    SPACING="$(python3 "$ROOT/bench/rtp_spacing.py" "$WORK/rtp.pcap" || true)"
    RECS="$( (find "$WORK/var" -name '*.wav' 2>/dev/null || true) | wc -l)"
    field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
    awk -v c="$C" -v rate="$RATE" -v hz="$HZ" -v cpu0="$CPU0" -v cpu1="$CPU1" -v t0="$T0" -v t1="$T1" \
        -v act="$SUM_ACTIVE" -v n="$SAMPLES" -v rss0="$RSS_IDLE" -v rss1="$RSS_MAX" \
        -v failed="$(field failed "$LG")" -v attempted="$(field attempted "$LG")" -v recs="$RECS" \
        -v mean="$(field mean_ms "$SPACING")" -v max="$(field max_ms "$SPACING")" \
        -v out="$(field out_of_20pm5 "$SPACING")" -v seqerr="$(field seq_errors "$SPACING")" \
        -v lg0="$LG0" -v lg1="$LG1" '
        BEGIN {
            secs = t1 - t0; up = (n > 0 ? act / n : c);
            cpu_ms = (cpu1 - cpu0) * 1000 / hz;
            printf "| %d (measured %.0f) | %s | %.3f | %.2f | %.1f | %s/%s | %s | %s | %s | %s | %s | %.3f |\n",
                c, up, rate, cpu_ms / (up * secs), cpu_ms / 1000 / secs, (rss1 - rss0) / up,
                failed, attempted, recs, mean, max, out, seqerr, (lg1 - lg0) * 1000 / hz / (up * secs)
        }'
    echo "   (work dir $WORK; loadgen: $LG)" >&2
done
