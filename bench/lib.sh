# Sourced by the bench scripts, not run: the release binaries and the /proc readers they share.
# Expects ROOT (the repository) to be set.

# bench_binaries NAME...: sets IVRD, LOADGEN and FLOOD to the release binaries. Builds them
# first unless each NAME wanted (ivrd, ivrd-loadgen, ivrd-flood) is given as IVRD_BIN,
# LOADGEN_BIN or FLOOD_BIN. Raises the soft descriptor limit to the hard one: the load
# generator holds sockets for thousands of calls (ivrd raises its own).
bench_binaries() {
    local dir="${CARGO_TARGET_DIR:-$ROOT/target}/release" build=0 name
    for name in "$@"; do
        case "$name" in
            ivrd) [[ -n "${IVRD_BIN:-}" ]] || build=1 ;;
            ivrd-loadgen) [[ -n "${LOADGEN_BIN:-}" ]] || build=1 ;;
            ivrd-flood) [[ -n "${FLOOD_BIN:-}" ]] || build=1 ;;
            *) echo "bench_binaries: unknown binary $name" >&2; return 2 ;;
        esac
    done
    if (( build )); then
        echo "== building release binaries" >&2
        (cd "$ROOT" && cargo build --release --quiet --bins)
    fi
    IVRD="${IVRD_BIN:-$dir/ivrd}"
    LOADGEN="${LOADGEN_BIN:-$dir/ivrd-loadgen}"
    FLOOD="${FLOOD_BIN:-$dir/ivrd-flood}"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# cpu_ticks PID: user + system CPU of a process, in clock ticks (getconf CLK_TCK per second).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# rss_kib PID: resident memory of a process.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
