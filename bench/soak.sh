#!/usr/bin/env bash
# Soak (issue 8): a release ivrd on 127.0.0.1 under the issue-7 workload (CALLS calls up at once,
# each ~CALL_SECS long with caller audio, keys 2 and #, a voice message), calls continuously
# replaced for DURATION seconds, then the load stops. Every SAMPLE_SECS it records ivrd's VmRSS,
# open descriptors, threads, UDP sockets, and from /metrics the active calls and alive tokio tasks
# into WORK/soak.csv (written as it goes). At the end it prints a summary and exits non-zero on
# failed calls or when descriptors, UDP sockets or tasks do not return to the idle baseline.
#
# Usage: bench/soak.sh                          # 500 calls, 3600 s
#   CALLS=30 DURATION=60 bench/soak.sh          # short
#   IVRD_BIN=... LOADGEN_BIN=... skip the build. KEEP_RECORDINGS=1 keeps every .wav.
# See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLS="${CALLS:-500}"
DURATION="${DURATION:-3600}"
CALL_SECS="${CALL_SECS:-20}"
KEYS="${KEYS:-2s:2,18s:#}"
SAMPLE_SECS="${SAMPLE_SECS:-10}"
# One ivrd-loadgen process per CHUNK seconds of call starts: the load generator keeps every
# call's socket until it exits, so one process for an hour would hold ~90,000 sockets.
CHUNK="${CHUNK:-60}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binaries ivrd ivrd-loadgen

WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ivrd-soak.XXXXXX")}"
mkdir -p "$WORK/loadgen"
echo "== work dir $WORK" >&2

IVRD_PID=""
SINK_PID=""
LAUNCH_PID=""
cleanup() {
    [[ -n "$LAUNCH_PID" ]] && kill "$LAUNCH_PID" 2>/dev/null || true
    # The load generators the launcher started (by pid), if the script is stopped early.
    [[ -f "$WORK/loadgen.pids" ]] && xargs -r kill <"$WORK/loadgen.pids" 2>/dev/null || true
    [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null || true
    if [[ -n "$IVRD_PID" ]] && kill -0 "$IVRD_PID" 2>/dev/null; then
        kill -TERM "$IVRD_PID"; wait "$IVRD_PID" || true
    fi
}
trap cleanup EXIT
trap 'echo "soak.sh: line $LINENO failed" >&2' ERR

# The intake backend (accepts every case), so the outbox is exercised and does not grow for an hour.
python3 "$ROOT/bench/intake_sink.py" "$WORK/sink.port" "$WORK/sink.keys" &
SINK_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK/sink.port" ]] && break; sleep 0.05; done
SINK_PORT="$(cat "$WORK/sink.port")"

cat > "$WORK/ivrd.toml" <<TOML
[sip]
listen = ["127.0.0.1:0"]
max_calls = $(( 2 * CALLS + 100 ))
drain_secs = 2

[media]
rtp_ports = "10000-29999"

[dialplan]
path = "$ROOT/dialplans/12345.toml"

[prompts]
dir = "$ROOT/prompts"

[storage]
dir = "$WORK/var"

[intake]
url = "http://127.0.0.1:$SINK_PORT/cases"
secret = "soak"

[metrics]
listen = "127.0.0.1:0"
TOML
NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn,ivrd::runtime::server=info,ivrd::runtime::http=info}" \
    "$IVRD" run --config "$WORK/ivrd.toml" >"$WORK/ivrd.log" 2>&1 &
IVRD_PID=$!
log_addr() { grep "$1" "$WORK/ivrd.log" | grep -o '127\.0\.0\.1:[0-9]*' | head -n1 || true; }
SIP=""; METRICS=""
for _ in $(seq 1 200); do
    SIP="$(log_addr 'SIP listening')"; METRICS="$(log_addr 'metrics and health endpoints')"
    [[ -n "$SIP" && -n "$METRICS" ]] && break
    kill -0 "$IVRD_PID" 2>/dev/null || { cat "$WORK/ivrd.log" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$SIP" && -n "$METRICS" ]] || { echo "ivrd did not report its addresses" >&2; exit 1; }

metric() { # value of an unlabelled metric, empty if not there
    curl -sf --max-time 5 "http://$METRICS/metrics" | awk -v n="$1" '$1 == n { print $2 }' || true
}
# UDP sockets ivrd holds: its socket descriptors whose inode is in the UDP tables.
udp_sockets() {
    { awk 'NR > 1 { print "u", $10 }' /proc/net/udp /proc/net/udp6
      find "/proc/$IVRD_PID/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null \
        | sed -n 's/^socket:\[\([0-9]*\)\]$/f \1/p'; } \
        | awk '$1 == "u" { udp[$2] = 1; next } ($2 in udp) { n++ } END { print n + 0 }' || true
}
# Entries vanish while find lists them under load (find then fails): count what was seen.
count_entries() { find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true; }
sample() { # t,phase,rss_kib,fds,threads,udp_sockets,calls_active,tasks_alive,outbox_pending
    local rss fds thr udp act tasks pend
    rss="$(rss_kib "$IVRD_PID")"
    fds="$(count_entries "/proc/$IVRD_PID/fd")"
    thr="$(count_entries "/proc/$IVRD_PID/task")"
    udp="$(udp_sockets)"
    act="$(metric ivrd_calls_active)"; tasks="$(metric ivrd_runtime_tasks_alive)"
    pend="$(metric ivrd_outbox_pending_cases)"
    echo "$(( $(date +%s) - T0 )),$1,$rss,$fds,$thr,$udp,${act:-},${tasks:-},${pend:-}" >>"$WORK/soak.csv"
}

echo "t_s,phase,rss_kib,fds,threads,udp_sockets,calls_active,tasks_alive,outbox_pending" >"$WORK/soak.csv"
T0="$(date +%s)"
sleep 2
sample idle; sample idle

# Calls start at CALLS/CALL_SECS per second, so CALLS are up once the first CALL_SECS have passed;
# a new load generator takes over every CHUNK seconds, so the starts never pause.
RATE="$(awk -v c="$CALLS" -v d="$CALL_SECS" 'BEGIN { printf "%.3f", c / d }')"
PER_CHUNK="$(awk -v c="$CALLS" -v d="$CALL_SECS" -v k="$CHUNK" 'BEGIN { printf "%d", c * k / d }')"
(
    i=0; start="$(date +%s)"
    while (( $(date +%s) - start < DURATION )); do
        left=$(( DURATION - ($(date +%s) - start) ))
        n=$(( left < CHUNK ? PER_CHUNK * left / CHUNK : PER_CHUNK ))
        (( n > 0 )) || break
        "$LOADGEN" --target "$SIP" --calls "$n" --rate "$RATE" --duration "${CALL_SECS}s" \
            --keys "$KEYS" >"$WORK/loadgen/chunk-$(printf %04d "$i").out" 2>&1 &
        echo $! >>"$WORK/loadgen.pids"
        i=$(( i + 1 ))
        sleep "$(( left < CHUNK ? left : CHUNK ))"
    done
    wait
) &
LAUNCH_PID=$!
LOAD_START=$(( $(date +%s) - T0 ))
while kill -0 "$LAUNCH_PID" 2>/dev/null; do
    sleep "$SAMPLE_SECS"
    sample load
    # Finished recordings are not what is measured and would fill the disk (~770 KB per call).
    [[ -n "${KEEP_RECORDINGS:-}" ]] || find "$WORK/var/recordings" -name '*.wav' -mmin +2 -delete 2>/dev/null || true
done
wait "$LAUNCH_PID" || true; LAUNCH_PID=""
LOAD_END=$(( $(date +%s) - T0 ))

# After the load: wait (bounded) for ivrd to report no call up and nothing pending, then sample.
for _ in $(seq 1 120); do
    [[ "$(metric ivrd_calls_active)" == 0 && "$(metric ivrd_outbox_pending_cases)" == 0 ]] && break
    sleep 1
done
for _ in 1 2 3; do sample after; sleep "$SAMPLE_SECS"; done

FAILED=0; ATTEMPTED=0
for f in "$WORK"/loadgen/chunk-*.out; do
    line="$(tail -n1 "$f")"
    a="$(sed -n 's/.*attempted=\([0-9]*\).*/\1/p' <<<"$line")"
    x="$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")"
    [[ -n "$a" && -n "$x" ]] || { echo "no result in $f: $line" >&2; x=1; a=0; }
    ATTEMPTED=$(( ATTEMPTED + a )); FAILED=$(( FAILED + x ))
done
DELIVERED="$(sort -u "$WORK/sink.keys" | grep -c . || true)"
POSTS="$(grep -c . "$WORK/sink.keys" || true)"

awk -F, -v failed="$FAILED" -v attempted="$ATTEMPTED" -v ls="$LOAD_START" -v le="$LOAD_END" \
    -v delivered="$DELIVERED" -v posts="$POSTS" -v work="$WORK" '
NR == 1 { next }
{ ph = $2 }
ph == "idle" { for (i = 4; i <= 8; i++) idle[i] = $i }
ph == "load" {
    n++; for (i = 3; i <= 8; i++) { if (!(i in mn) || $i < mn[i]) mn[i] = $i; if ($i > mx[i]) mx[i] = $i }
    if (n == 1) rss_first = $3; rss_last = $3
    if ($1 >= ls + (le - ls) / 2) { sx += $1; sy += $3; sxx += $1 * $1; sxy += $1 * $3; m++ }
}
ph == "after" { for (i = 4; i <= 8; i++) { if (!(i in after) || $i < after[i]) after[i] = $i }; rss_after = $3 }
END {
    slope = (m > 1 && m * sxx - sx * sx != 0) ? (m * sxy - sx * sy) / (m * sxx - sx * sx) * 3600 : 0
    printf "calls: attempted %d, failed %d; cases delivered %d (%d POSTs)\n", attempted, failed, delivered, posts
    printf "load %d s, %d samples; RSS first %d KiB, last %d KiB, after load %d KiB; slope over 2nd half %.0f KiB/hour (%d samples)\n", le - ls, n, rss_first, rss_last, rss_after, slope, m
    split("rss_kib fds threads udp_sockets calls_active tasks_alive", names, " ")
    leak = 0
    for (i = 4; i <= 8; i++) {
        name = names[i - 2]
        printf "%-13s idle %6s  load min %6s max %6s  after %6s", name, idle[i], mn[i], mx[i], after[i]
        if ((name == "fds" || name == "udp_sockets" || name == "tasks_alive") && after[i] > idle[i]) { printf "  LEAK"; leak = 1 }
        printf "\n"
    }
    printf "CSV: %s/soak.csv\n", work
    exit (failed > 0 || attempted == 0 || leak) ? 1 : 0
}' "$WORK/soak.csv"
