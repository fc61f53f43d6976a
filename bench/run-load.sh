#!/usr/bin/env bash
# Load table of issue 7. First ivrd's start-up time (STARTUP_RUNS starts: exec → "SIP listening"
# log line, exec → first 200 OK to a probe call). Then, for each CONCURRENCY level, a release
# ivrd on 127.0.0.1 takes calls from ivrd-loadgen (INVITE PCMU + telephone-event, caller audio for
# the whole call, two RFC 4733 keys, BYE after DURATION) so that CONCURRENCY calls are up at once,
# and the script measures in a steady window:
#   ivrd CPU (utime+stime from /proc/PID/stat) per call-second, calls up from ivrd's /metrics
#   (ivrd_calls_active), RSS per call (VmRSS in the window minus idle, / calls up), failed calls,
#   cases spooled and recordings written, RTP spacing of what ivrd sends (a dumpcap capture of
#   ~100 streams after the CPU window, bench/rtp_spacing.py), and the load generator's (or
#   SIPp's) own CPU per call-second in the same window.
# A level written RATEcps (e.g. 300cps) is a set-up rate run instead: RATE short calls per second
# for SETUP_SECS seconds; it reports the achieved rate, set-up mean/max, failures, cases.
# Prints one table row per level. See bench/README.md.
#
# Usage: bench/run-load.sh 50 300 [1000 3000 ...] [300cps]
#   DURATION=20 KEYS="2s:2,18s:#" TRANSFER="486 Busy Here" bench/run-load.sh 300
#   SETUP_SECS=10 SETUP_CALL_SECS=2 bench/run-load.sh 300cps
#   IVRD_BIN=... LOADGEN_BIN=... skip the build.
#   DRIVER=sipp bench/run-load.sh 300   (the same workload from SIPp, for the cross-check)
#   PROFILE=1 bench/run-load.sh 300      (perf record of ivrd in the window: WORK/perf.data)
#   RTP_DRAIN=off|full bench/run-load.sh 3000   (how the loadgen reads ivrd's RTP; default sampled)
#   STARTUP_RUNS=0 skips the start-up measurement.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 CONCURRENCY|RATEcps..." >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-20}"
KEYS="${KEYS:-2s:2,18s:#}"
TRANSFER="${TRANSFER:-486 Busy Here}"
CAPTURE_SECS="${CAPTURE_SECS:-5}"
# Seconds captured before the analysed ones: dumpcap's start-up disturbs the machine (see
# bench/rtp_spacing.py --skip).
CAPTURE_SKIP=1
DRIVER="${DRIVER:-loadgen}"   # or sipp (bench/sipp_ivr_call.xml)
RTP_DRAIN="${RTP_DRAIN:-sampled}"   # ivrd-loadgen --rtp-drain: full, sampled or off
SETUP_SECS="${SETUP_SECS:-10}"
SETUP_CALL_SECS="${SETUP_CALL_SECS:-2}"
STARTUP_RUNS="${STARTUP_RUNS:-3}"
# Below the kernel's ephemeral range (32768–60999 by default) so that callers' sockets never take
# them: 10,000 RTP/RTCP pairs, enough for max_calls at 3,000 concurrent calls.
RTP_LOW=10000
RTP_HIGH=29999
HZ="$(getconf CLK_TCK)"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd ivrd-loadgen
LG_FLAGS=(--rtp-drain "$RTP_DRAIN")

# Descriptors: ivrd holds per call an RTP and an RTCP socket, the call recording and, while the
# caller speaks, the message recording (+ slack for SIP, the outbox and the runtime). Root may
# raise the hard limit; otherwise the soft limit goes up to the hard one.
MAX_C=0
for L in "$@"; do
    if [[ "$L" == *cps ]]; then c=$(( ${L%cps} * SETUP_CALL_SECS )); else c=$L; fi
    (( c > MAX_C )) && MAX_C=$c
done
NEED_FDS=$(( 2 * (6 * MAX_C + 1024) ))
if [[ "$(ulimit -Hn)" != unlimited ]] && (( $(ulimit -Hn) < NEED_FDS )); then
    ulimit -Hn "$NEED_FDS" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < NEED_FDS / 2 )); then
    echo "descriptor limit $(ulimit -n) is below the $(( NEED_FDS / 2 )) needed for $MAX_C calls" >&2
    exit 1
fi
if (( (RTP_HIGH - RTP_LOW + 1) / 2 < 2 * MAX_C + 100 )); then
    echo "RTP range $RTP_LOW-$RTP_HIGH is too small for max_calls $(( 2 * MAX_C + 100 ))" >&2
    exit 1
fi

IVRD_PID=""
CAP_PID=""
stop_ivrd() {
    [[ -n "$CAP_PID" ]] && kill "$CAP_PID" 2>/dev/null || true
    CAP_PID=""
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"; wait "$IVRD_PID" || true
    fi
    IVRD_PID=""
}
trap stop_ivrd EXIT

plain_log() { sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/ivrd.log"; }
log_time() { # the timestamp (seconds since the epoch) of the first line matching $1
    local ts
    ts="$(plain_log | grep -m1 "$1" | awk '{ print $1 }')"
    [[ -n "$ts" ]] && date -d "$ts" +%s.%N
}
# The media clock's ticks between two scrapes of /metrics: how many, how many started more than
# 5, 10 and 20 ms late (ivrd_media_tick_lateness_seconds), and how many took more than 6, 10 and
# 15 ms of work (ivrd_media_tick_work_seconds). A stall that shows in the RTP spacing but in
# neither happened outside ivrd's ticks (see stall_canary.py).
media_ticks() {
    awk '
        FNR == 1 { file++ }
        $1 ~ /^ivrd_media_tick_(lateness|work)_seconds_(bucket|count)/ {
            if (file == 1) before[$1] = $2 + 0; else after[$1] = $2 + 0
        }
        function over(metric, le,    total) {
            total = after[metric "_count"] - before[metric "_count"]
            return total - (after[metric "_bucket{le=\"" le "\"}"] - before[metric "_bucket{le=\"" le "\"}"])
        }
        END {
            late = "ivrd_media_tick_lateness_seconds"; work = "ivrd_media_tick_work_seconds"
            total = after[late "_count"] - before[late "_count"]
            if (total <= 0) { print "no scrape"; exit }
            printf "%d ticks, late > 5 ms: %d, > 10 ms: %d, > 20 ms: %d; work > 6 ms: %d, > 10 ms: %d, > 15 ms: %d",
                total, over(late, "0.005"), over(late, "0.01"), over(late, "0.02"),
                over(work, "0.006"), over(work, "0.01"), over(work, "0.015")
        }' "$1" "$2" 2>/dev/null || echo "no scrape"
}

# Calls up now, as ivrd counts them (the ivrd_calls_active gauge of /metrics).
active_calls() {
    curl -s --max-time 2 "http://$METRICS/metrics" | awk '$1 == "ivrd_calls_active" { print int($2) }'
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
# Cases the daemon spooled (no [intake] url: they stay in the outbox) and recordings it wrote.
count_cases() {
    (find "$WORK/var/outbox" -name '*.json' ! -name '*.meta.json' 2>/dev/null || true) | wc -l
}
count_recordings() { (find "$WORK/var" -name '*.wav' 2>/dev/null || true) | wc -l; }
# Once counted, the recordings are emptied (0.5–1.5 GB per level; a series of runs filled the
# disk); KEEP_RECORDINGS=1 keeps them. Emptied, not deleted: ext4 avoids reusing an inode freed
# in the last ~30 s and checks each candidate on disk, and right after thousands of deletions
# that made creating the next run's recordings a third of the recording writer's CPU.
drop_audio() {
    [[ -n "${KEEP_RECORDINGS:-}" ]] ||
        find "$WORK/var/recordings" -type f -exec truncate -s 0 {} + 2>/dev/null || true
}

# Starts ivrd with a fresh config in a new $WORK for up to $1 simultaneous calls; sets IVRD_PID,
# T_EXEC (just before exec), SIP and METRICS once ivrd has logged both listening lines.
start_ivrd() {
    # Earlier writes (a build just before, the last run's recordings) go to the disk first: their
    # writeback would otherwise compete with this run's recording writer (twice, right after a
    # build, the writer stalled ~3 s and 3,000-7,000 recordings of a 3,000-call run lacked audio).
    sync
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/ivrd-bench.XXXXXX")"
    cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
max_calls = $1
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
    T_EXEC="$(date +%s.%N)"
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info,ivrd::runtime::http=info}" \
        "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd.log" 2>&1 &
    IVRD_PID=$!
    SIP=""; METRICS=""
    local log nl=$'\n'
    # Polled with bash built-ins only (no process per poll) so that it reacts within ~5 ms.
    for _ in $(seq 1 2000); do
        [[ -s "$WORK/ivrd.log" ]] && log="$(<"$WORK/ivrd.log")" || log=""
        if [[ $log =~ SIP\ listening[^$nl]*(127\.0\.0\.1:[0-9]+) ]]; then SIP="${BASH_REMATCH[1]}"; fi
        if [[ $log =~ metrics\ and\ health\ endpoints\ listening[^$nl]*(127\.0\.0\.1:[0-9]+) ]]; then
            METRICS="${BASH_REMATCH[1]}"
        fi
        [[ -n "$SIP" && -n "$METRICS" ]] && return 0
        kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd.log" >&2; exit 1; }
        sleep 0.005
    done
    echo "ivrd did not report its addresses" >&2; cat "$WORK/ivrd.log" >&2; exit 1
}

# --- start-up time ---------------------------------------------------------------------------
# The probe call starts as soon as the script sees the listening lines (polled every 5 ms), so
# "first 200 OK" includes up to ~5 ms of polling and the loadgen's own start.
if (( STARTUP_RUNS > 0 )); then
    for i in $(seq 1 "$STARTUP_RUNS"); do
        start_ivrd 10
        PROBE="$("$LOADGEN" --target "$SIP" --calls 1 --rate 1 --duration 1s --keys "" 2>&1 | tail -n1 || true)"
        LISTEN="$(log_time 'SIP listening')"
        FIRST="$(field first_answer_unix_s "$PROBE")"
        awk -v i="$i" -v e="$T_EXEC" -v l="$LISTEN" -v f="$FIRST" -v setup="$(field setup_mean_ms "$PROBE")" 'BEGIN {
            printf "start-up %d: exec → SIP listening %.1f ms, exec → first 200 OK %s ms (probe call set-up %s ms)\n",
                i, (l - e) * 1000, (f == "-" || f == "" ? "n/a" : sprintf("%.1f", (f - e) * 1000)), setup }'
        stop_ivrd
    done
fi

# --- set-up rate runs (RATEcps) ---------------------------------------------------------------
setup_row() {
    local rate=$1 calls=$(( $1 * SETUP_SECS ))
    if [[ "$DRIVER" != loadgen ]]; then
        echo "set-up rate runs use ivrd-loadgen only (bench/sip-load.sh is the SIPp one)" >&2; return
    fi
    start_ivrd $(( 2 * rate * SETUP_CALL_SECS + 100 ))
    if [[ -n "${PROFILE:-}" ]]; then
        perf record -q -e cpu-clock -F 499 -g -p "$IVRD_PID" -o "$WORK/perf.data" \
            -- sleep "$SETUP_SECS" >/dev/null 2>&1 &
    fi
    CPU0="$(cpu_ticks "$IVRD_PID")"
    # Short calls without keys: INVITE, ACK, SETUP_CALL_SECS of audio, BYE.
    "$LOADGEN" --target "$SIP" --calls "$calls" --rate "$rate" --duration "${SETUP_CALL_SECS}s" \
        --keys "" "${LG_FLAGS[@]}" >"$WORK/loadgen.out" 2>&1 || true
    CPU1="$(cpu_ticks "$IVRD_PID")"
    LG="$(tail -n1 "$WORK/loadgen.out")"
    stop_ivrd
    printf '| %s | %s | %s/%s | %s | %s | %s | %s | %s | %.3f | %.3f |\n' \
        "$rate" "$(field setup_rate "$LG")" "$(field failed "$LG")" "$(field attempted "$LG")" \
        "$(field setup_mean_ms "$LG")" "$(field setup_max_ms "$LG")" "$(field no_media "$LG")" \
        "$(count_cases)" "$(count_recordings)" \
        "$(awk -v t="$(( CPU1 - CPU0 ))" -v hz="$HZ" -v n="$calls" 'BEGIN { print t * 1000 / hz / n }')" \
        "$(awk -v ms="$(field loadgen_cpu_ms "$LG")" -v n="$calls" 'BEGIN { print ms / n }')"
    echo "   (work dir $WORK; loadgen: $LG)" >&2
    drop_audio
}

# --- concurrency runs ---------------------------------------------------------------------------
load_row() {
    local C=$1
    RATE="$(awk -v c="$C" -v d="$DURATION" 'BEGIN { printf "%.3f", c / d }')"
    CALLS=$(( 2 * C ))
    start_ivrd $(( 2 * C + 100 ))
    sleep 1
    RSS_IDLE="$(rss_kib "$IVRD_PID")"

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
            --keys "$KEYS" --transfer-status "$TRANSFER" "${LG_FLAGS[@]}" >"$WORK/loadgen.out" 2>&1 &
    fi
    LG_PID=$!
    # Steady window: every call started in [t-DURATION, t] is up, so from DURATION+2 s on
    # C calls are up until the last call starts at 2·DURATION.
    sleep $(( DURATION + 2 ))
    WINDOW=$(( DURATION - 4 - CAPTURE_SECS - CAPTURE_SKIP ))
    if [[ -n "${PROFILE:-}" ]]; then
        # Sampled profile of ivrd over the CPU window (its overhead shows in that row's CPU).
        perf record -q -e cpu-clock -F 499 -g -p "$IVRD_PID" -o "$WORK/perf.data" \
            -- sleep "$WINDOW" >/dev/null 2>&1 &
    fi
    T0=$(date +%s.%N); CPU0="$(cpu_ticks "$IVRD_PID")"; LG0="$(cpu_ticks "$LG_PID")"
    SUM_ACTIVE=0; SAMPLES=0; RSS_MAX=0
    for _ in $(seq 1 "$WINDOW"); do
        sleep 1
        # An overloaded ivrd may not answer /metrics within 2 s: that sample is skipped.
        A="$(active_calls || true)"
        [[ -n "$A" ]] && { SUM_ACTIVE=$(( SUM_ACTIVE + A )); SAMPLES=$(( SAMPLES + 1 )); }
        R="$(rss_kib "$IVRD_PID")"; (( R > RSS_MAX )) && RSS_MAX=$R
    done
    T1=$(date +%s.%N); CPU1="$(cpu_ticks "$IVRD_PID")"; LG1="$(cpu_ticks "$LG_PID")"
    # Capture after the CPU window so dumpcap's own work does not count against ivrd.
    # About 100 of ivrd's streams (every Nth RTP port pair), so that dumpcap stays light even
    # at thousands of calls.
    EVERY=$(( C > 100 ? C / 100 : 1 ))
    dumpcap -q -i lo -P -f "udp src portrange $RTP_LOW-$RTP_HIGH and udp[0:2] % $(( 2 * EVERY )) = 0" \
        -a "duration:$(( CAPTURE_SKIP + CAPTURE_SECS ))" \
        -w "$WORK/rtp.pcap" 2>/dev/null &
    CAP_PID=$!
    # Stalls of the CPUs themselves over the capture (bench/stall_canary.py), so that the RTP
    # deltas they caused can be told from the sender's.
    python3 "$ROOT/bench/stall_canary.py" --seconds "$(( CAPTURE_SKIP + CAPTURE_SECS ))" \
        --threshold-ms 2 >"$WORK/stalls.txt" 2>"$WORK/stall_canary.err" &
    CANARY_PID=$!
    curl -s --max-time 2 "http://$METRICS/metrics" >"$WORK/metrics-capture-start.txt" || true
    wait "$CAP_PID" || true; CAP_PID=""
    wait "$CANARY_PID" || true
    curl -s --max-time 2 "http://$METRICS/metrics" >"$WORK/metrics-capture-end.txt" || true
    wait "$LG_PID" || true
    if [[ "$DRIVER" == sipp ]]; then
        OK="$(awk -F';' 'NR==1 { for (i=1;i<=NF;i++) { if ($i=="SuccessfulCall(C)") s=i; if ($i=="FailedCall(C)") f=i } } END { print $s, $f }' "$WORK/sipp-stat.csv")"
        LG="attempted=$CALLS failed=${OK#* } no_media=-"
    else
        LG="$(tail -n1 "$WORK/loadgen.out")"
    fi
    stop_ivrd

    SPACING="$(python3 "$ROOT/bench/rtp_spacing.py" --skip "$CAPTURE_SKIP" --stalls "$WORK/stalls.txt" \
        "$WORK/rtp.pcap" || true)"
    awk -v c="$C" -v rate="$RATE" -v hz="$HZ" -v cpu0="$CPU0" -v cpu1="$CPU1" -v t0="$T0" -v t1="$T1" \
        -v act="$SUM_ACTIVE" -v n="$SAMPLES" -v rss0="$RSS_IDLE" -v rss1="$RSS_MAX" \
        -v failed="$(field failed "$LG")" -v attempted="$(field attempted "$LG")" \
        -v nomedia="$(field no_media "$LG")" -v cases="$(count_cases)" -v recs="$(count_recordings)" \
        -v mean="$(field mean_ms "$SPACING")" -v max="$(field max_ms "$SPACING")" \
        -v out="$(field out_of_20pm5 "$SPACING")" -v seqerr="$(field seq_errors "$SPACING")" \
        -v lg0="$LG0" -v lg1="$LG1" '
        BEGIN {
            secs = t1 - t0; up = (n > 0 && act > 0 ? act / n : c);
            cpu_ms = (cpu1 - cpu0) * 1000 / hz;
            printf "| %d (up %.0f) | %s | %.3f | %.2f | %.1f | %s/%s | %s | %s | %s | %s | %s | %s | %s | %.3f |\n",
                c, up, rate, cpu_ms / (up * secs), cpu_ms / 1000 / secs, (rss1 - rss0) / up,
                failed, attempted, nomedia, cases, recs, mean, max, out, seqerr,
                (lg1 - lg0) * 1000 / hz / (up * secs)
        }'
    echo "   (work dir $WORK; $DRIVER: $LG)" >&2
    echo "   (media ticks during the capture: $(media_ticks "$WORK/metrics-capture-start.txt" "$WORK/metrics-capture-end.txt"))" >&2
    echo "   (CPU stalls > 2 ms during the capture: $(field stalls "$SPACING"), longest $(awk 'BEGIN { m = 0 } $3 > m { m = $3 } END { print m }' "$WORK/stalls.txt") ms; RTP outside them: max Δ $(field max_ms_outside_stalls "$SPACING") ms, $(field out_of_20pm5_outside_stalls "$SPACING") outside 20±5 ms)" >&2
    drop_audio
}

MODE=""
for L in "$@"; do
    if [[ "$L" == *cps ]]; then
        if [[ "$MODE" != setup ]]; then
            printf '\n| calls/s offered | calls/s achieved | failed/attempted | set-up mean ms | set-up max ms | no media | cases | recordings | ivrd CPU ms per call | loadgen CPU ms per call |\n'
            printf '|---|---|---|---|---|---|---|---|---|---|\n'
            MODE=setup
        fi
        setup_row "${L%cps}"
    else
        if [[ "$MODE" != load ]]; then
            printf '\n'
            printf '| calls up | calls/s | ivrd CPU ms per call-s | ivrd cores | RSS KiB/call | failed/attempted | no media | cases | recordings | RTP mean Δ ms | RTP max Δ ms | outside 20±5 ms | seq errors | %s CPU ms per call-s |\n' "$DRIVER"
            printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
            MODE=load
        fi
        load_row "$L"
    fi
done
