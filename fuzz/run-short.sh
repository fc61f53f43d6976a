#!/usr/bin/env bash
# Runs every fuzz target for a short while (default 20 s each) on stable Rust, one after the other.
# Exits non-zero as soon as a target crashes; the crashing input is left in fuzz/artifacts/<target>/.
# Usage: fuzz/run-short.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sip_message sip_endpoint sdp_offer rtp_rtcp dtmf dialplan case_json)
fi
cargo fuzz build -s none
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus under target/ (ignored); the committed seeds stay read-only.
    work="target/corpus/$t"
    mkdir -p "$work" "corpus/$t"
    echo "== $t (${secs}s)"
    log="target/run-short-$t.log"
    rc=0
    cargo fuzz run -s none "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' -A3 "$log" >&2 || tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "all ${#targets[@]} targets ran ${secs}s without a crash"
