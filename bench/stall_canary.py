#!/usr/bin/env python3
"""Stalls of the machine itself, as a real-time thread pinned to each CPU sees them.

One process per CPU, pinned to it and under SCHED_FIFO (priority above ivrd's media workers),
wakes every millisecond and reports every wake-up that came more than --threshold-ms late:
nothing in user space can hold it back, so such a stall is the CPU taken away (by the
hypervisor on a VM, or by interrupt work) — and an ivrd media tick that was running on that
CPU was held back just as long. bench/run-load.sh runs it during the RTP capture, and
rtp_spacing.py --stalls tells the RTP deltas that fall in such a stall from the others.

Output, one line per stall: `CPU START_EPOCH_S LENGTH_MS` (START is when the wake-up was due).
Standard library only; needs root (or CAP_SYS_NICE) for SCHED_FIFO, else it runs at normal
priority and says so on stderr (its stalls then include plain scheduling delay).
"""
import argparse
import os
import sys
import time

PERIOD_S = 0.001


def watch(cpu, seconds, threshold_ms, out):
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(60))
    except PermissionError:
        print(f"stall_canary: cpu{cpu} not real-time (no permission)", file=sys.stderr)
    # Wall-clock and monotonic read together once, so stalls can be matched to pcap times.
    wall0, mono0 = time.time(), time.monotonic()
    end = mono0 + seconds
    due = mono0 + PERIOD_S
    lines = []
    while True:
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
            now = time.monotonic()
        late_ms = (now - due) * 1000.0
        if late_ms > threshold_ms:
            lines.append(f"{cpu} {wall0 + (due - mono0):.6f} {late_ms:.2f}\n")
            due = now  # a stall is one report, not one per missed millisecond
        if now >= end:
            break
        due += PERIOD_S
    out.write("".join(lines))
    out.flush()


def main():
    parser = argparse.ArgumentParser(description="report CPU stalls seen by a pinned RT thread")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threshold-ms", type=float, default=3.0)
    args = parser.parse_args()
    children = []
    for cpu in sorted(os.sched_getaffinity(0)):
        pid = os.fork()
        if pid == 0:
            watch(cpu, args.seconds, args.threshold_ms, sys.stdout)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
