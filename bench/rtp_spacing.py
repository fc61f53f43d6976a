#!/usr/bin/env python3
"""RTP spacing of what ivrd sent, from a pcap of loopback traffic (bench/run-load.sh).

Reads a classic pcap (what dumpcap -P writes), keeps UDP packets that look like RTP audio
(version 2, payload type 0 or 8, even source port) and, per stream (source port + SSRC), the
deltas between consecutive arrivals. Prints: streams, packets, mean delta, max delta, the share
of deltas outside 20 +/- 5 ms, and sequence errors (a packet whose sequence number is not the
previous one + 1). Standard library only.

`--skip S` leaves out the first S seconds after the first packet: dumpcap's own start-up
(its ring buffer, the filter) delays every thread on a loaded machine for a moment, which is
the capture's doing, not the sender's (at 3,000 calls every delta outside 20 +/- 5 ms of one
run fell in the capture's first 0.21 s).

`--stalls FILE` takes bench/stall_canary.py's output (`CPU START_EPOCH_S LENGTH_MS` per stall of
a CPU) and also prints the max delta and the share outside 20 +/- 5 ms of the deltas that do
not overlap a stall window: from 1 ms before the stall to one 20 ms tick after it (the tick held
back and the short delta after it). Those are what the sender did on a machine that ran it.
"""
import argparse
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            endian = "<"
        else:
            endian = ">"
        nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            t = sec + frac / (1e9 if nano else 1e6)
            yield t, linktype, data


def udp_payload(linktype, data):
    if linktype == 1:  # Ethernet (Linux loopback)
        off = 14
    elif linktype == 113:  # Linux cooked
        off = 16
    elif linktype == 276:  # Linux cooked v2
        off = 20
    else:
        off = 0
    ip = data[off:]
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    sport = struct.unpack(">H", ip[ihl:ihl + 2])[0]
    return sport, ip[ihl + 8:]


# A stall's window: a delta overlapping it is the stall's doing (see the module comment).
STALL_BEFORE_S = 0.001
STALL_AFTER_S = 0.020


def read_stalls(path):
    windows = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) != 3:
                continue
            start, length_ms = float(fields[1]), float(fields[2])
            windows.append((start - STALL_BEFORE_S, start + length_ms / 1000.0 + STALL_AFTER_S))
    return sorted(windows)


def in_stall(windows, t0, t1):
    return any(w0 <= t1 and t0 <= w1 for w0, w1 in windows)


def main(path, skip=0.0, stalls=None):
    windows = read_stalls(stalls) if stalls else None
    clear = []
    last = {}
    start = None
    deltas = []
    seq_errors = 0
    count = 0
    for t, lt, data in packets(path):
        got = udp_payload(lt, data)
        if got is None:
            continue
        sport, rtp = got
        start = t if start is None else start
        if t - start < skip:
            continue
        if sport % 2 or len(rtp) < 12 or rtp[0] >> 6 != 2 or (rtp[1] & 0x7F) not in (0, 8):
            continue
        seq = struct.unpack(">H", rtp[2:4])[0]
        ssrc = struct.unpack(">I", rtp[8:12])[0]
        key = (sport, ssrc)
        count += 1
        prev = last.get(key)
        if prev is not None:
            deltas.append((t - prev[0]) * 1000.0)
            if windows is not None and not in_stall(windows, prev[0], t):
                clear.append(deltas[-1])
            if seq != (prev[1] + 1) & 0xFFFF:
                seq_errors += 1
        last[key] = (t, seq)
    if not deltas:
        print("streams=0 packets=0 mean_ms=nan max_ms=nan out_of_20pm5=nan seq_errors=0")
        return
    out = sum(1 for d in deltas if d < 15.0 or d > 25.0)
    print(
        f"streams={len(last)} packets={count} mean_ms={sum(deltas) / len(deltas):.2f} "
        f"max_ms={max(deltas):.2f} out_of_20pm5={100.0 * out / len(deltas):.3f}% "
        f"seq_errors={seq_errors}"
        + (stall_summary(windows, clear) if windows is not None else "")
    )


def stall_summary(windows, clear):
    if not clear:
        return f" stalls={len(windows)} max_ms_outside_stalls=nan out_of_20pm5_outside_stalls=nan"
    out = sum(1 for d in clear if d < 15.0 or d > 25.0)
    return (
        f" stalls={len(windows)} max_ms_outside_stalls={max(clear):.2f}"
        f" out_of_20pm5_outside_stalls={100.0 * out / len(clear):.3f}%"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="RTP spacing of ivrd's sent audio in a pcap")
    parser.add_argument("--skip", type=float, default=0.0,
                        help="seconds after the first packet to leave out")
    parser.add_argument("--stalls", help="bench/stall_canary.py output for the capture")
    parser.add_argument("pcap")
    args = parser.parse_args()
    main(args.pcap, args.skip, args.stalls)
