"""Feeds the corpus to a system under test, over TCP or as files, at full speed or a fixed rate.

The corpus is loaded once; the feeder only ever sends slices of it (`sendall` of pre-built
chunks, or one file write per chunk), so it is much faster than either system. Each marker line
(`#MARK ` and 16 digits) gets the current epoch microseconds written over its digits just before
the slice that holds it is sent or written.

    feeder.py tcp   --corpus F [--port 0] [--rate LINES_PER_S] [--passes N | --duration S]
                    [--report REPORT]
        Listens on 127.0.0.1 (prints `port N` on stdout once listening), accepts one client,
        sends, then closes. The system under test connects as a client.
    feeder.py tcp   ... --keep-listening
        The same, but a client that goes away (a killed system) is followed by the next one
        to connect, fed from the start of the corpus at the same rate; ends after --duration
        seconds of its last client, or when no client comes within --accept-timeout.
    feeder.py files --corpus F --dir D [--rate LINES_PER_S] [--passes N | --duration S]
                    [--report REPORT [--backlog LINES]]
        Writes one file per marker interval (10,000 lines) under a temporary name beside D,
        then renames it into D, so a reader never sees a partial file. With --backlog,
        stays at most --backlog lines ahead of what the system's report says it has taken.
    feeder.py files ... --link
        Full speed: writes each file once (its markers stamped then), and puts every file of
        every pass into D as a hard link to it, which is as atomic as a rename and costs the
        feeder a system call instead of a write of the file's bytes (a Python writer tops out
        at about 0.5 GB/s per core, below what sluice reads). Marker stamps then say when the
        file was first written: throughput runs, which do not measure latency, only.

With --report, the --duration seconds count from the system's first batch with records.

Rate 0 is full speed. When done, prints one JSON object: lines, bytes, start_ms, end_ms and
cpu_s (the feeder's own CPU time, to show it was not the bottleneck).
"""

import argparse
import json
import os
import socket
import sys
import time

MARKER = b"#MARK "
STAMP_WIDTH = 16
PIECES_PER_SEGMENT = 10  # at a fixed rate, a marker segment goes out in this many paced pieces


def now_us():
    return time.time_ns() // 1000


def load(path):
    """The corpus as a bytearray, the offsets of its marker stamps, and its segments: one per
    marker, from the marker to the next one (the first segment starts at 0)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    stamps = []
    pos = 0 if data.startswith(MARKER) else data.find(b"\n" + MARKER)
    while pos != -1:
        start = pos if data[pos:pos + len(MARKER)] == MARKER else pos + 1
        stamps.append(start + len(MARKER))
        pos = data.find(b"\n" + MARKER, start + 1)
    bounds = [0] + [s - len(MARKER) for s in stamps if s - len(MARKER) > 0] + [len(data)]
    segments = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    return data, stamps, segments


def split_segment(data, start, end, pieces):
    """`pieces` slices of [start, end) cut at line ends, as (start, end, lines)."""
    out = []
    step = max(1, (end - start) // pieces)
    pos = start
    while pos < end:
        cut = min(end, pos + step)
        if cut < end:
            nl = data.find(b"\n", cut)
            cut = end if nl == -1 or nl >= end else nl + 1
        out.append((pos, cut, data.count(b"\n", pos, cut), pos == start))
        pos = cut
    return out


def plan(data, segments, rate):
    """The slices to send, in order: whole segments at full speed, smaller pieces when paced."""
    if rate <= 0:
        return [(s, e, data.count(b"\n", s, e), True) for s, e in segments]
    out = []
    for s, e in segments:
        out.extend(split_segment(data, s, e, PIECES_PER_SEGMENT))
    return out


def stamp(data, stamps, start, end):
    """Writes the current time into every marker stamp in [start, end)."""
    for off in stamps:
        if start <= off < end:
            data[off:off + STAMP_WIDTH] = b"%016d" % now_us()


def paced(pieces, rate, passes, duration, clock=None):
    """Yields (pass, index, piece), sleeping so that lines go out at `rate` per second. Ends
    after `passes` passes over the corpus or, with a `duration`, at the first marker segment
    that starts after `duration` seconds (passing over the corpus as often as needed). The
    seconds count from the start, or from when `clock()` first returns a time."""
    t0 = time.monotonic()
    since = None if clock else t0
    sent = 0
    p = 0
    while duration > 0 or p < passes:
        for i, piece in enumerate(pieces):
            if since is None:
                since = clock()
            if duration > 0 and piece[3] and since is not None and time.monotonic() - since >= duration:
                return
            if rate > 0:
                delay = t0 + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield p, i, piece
            sent += piece[2]
        p += 1


class Consumed:
    """Records taken so far by the system under test, from its JSONL report (the sum of
    `records_in`), read as it grows."""

    def __init__(self, path):
        self.path = path
        self.f = None
        self.partial = ""
        self.total = 0
        self.first = None

    def started(self):
        """When the system was first seen to take input (monotonic), or None."""
        if self.first is None and self.get() > 0:
            self.first = time.monotonic()
        return self.first

    def get(self):
        if self.f is None:
            try:
                self.f = open(self.path, encoding="utf-8")
            except FileNotFoundError:
                return self.total
        chunk = self.f.read()
        if chunk:
            lines = (self.partial + chunk).split("\n")
            self.partial = lines.pop()
            for line in lines:
                if line.strip():
                    try:
                        self.total += int(json.loads(line).get("records_in", 0))
                    except ValueError:
                        pass
        return self.total


def feed_tcp(a, data, stamps, pieces, consumed):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(1)
    print(f"port {srv.getsockname()[1]}", flush=True)
    srv.settimeout(a.accept_timeout)
    conn, _ = srv.accept()
    srv.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    view = memoryview(data)
    start_ms = time.time() * 1e3
    lines = nbytes = 0
    try:
        clock = consumed.started if consumed else None
        for _, _, (s, e, n, _) in paced(pieces, a.rate, a.passes, a.duration, clock):
            stamp(data, stamps, s, e)
            conn.sendall(view[s:e])
            lines += n
            nbytes += e - s
    except (BrokenPipeError, ConnectionResetError) as err:
        print(f"feeder: the client went away after {lines} lines: {err}", file=sys.stderr)
    end_ms = time.time() * 1e3
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    # Let the client read to the end before the socket goes away.
    conn.settimeout(a.linger)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()
    return lines, nbytes, start_ms, end_ms


def feed_tcp_restartable(a, data, stamps, pieces):
    """One client after another (`--keep-listening`): each is fed afresh, paced from when it
    connected, until the duration is over or it goes away."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(1)
    print(f"port {srv.getsockname()[1]}", flush=True)
    srv.settimeout(a.accept_timeout)
    start_ms = time.time() * 1e3
    lines = nbytes = 0
    view = memoryview(data)
    while True:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            break
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for _, _, (s, e, n, _) in paced(pieces, a.rate, a.passes, a.duration):
                stamp(data, stamps, s, e)
                conn.sendall(view[s:e])
                lines += n
                nbytes += e - s
            conn.close()
            break
        except (BrokenPipeError, ConnectionResetError) as err:
            print(f"feeder: the client went away after {lines} lines ({err}); waiting for the next",
                  file=sys.stderr, flush=True)
            conn.close()
    srv.close()
    return lines, nbytes, start_ms, time.time() * 1e3


def feed_files(a, data, stamps, segments, consumed):
    os.makedirs(a.dir, exist_ok=True)
    tmp = a.tmp_dir or os.path.join(os.path.dirname(os.path.abspath(a.dir)), ".feed-tmp")
    os.makedirs(tmp, exist_ok=True)
    print("ready", flush=True)
    start_ms = time.time() * 1e3
    lines = nbytes = 0
    pieces = [(s, e, data.count(b"\n", s, e), True) for s, e in segments]
    sources = None
    if a.link:
        # Every segment written once, before the feed starts; each file of the feed is a link.
        sources = []
        for i, (s, e, _, _) in enumerate(pieces):
            stamp(data, stamps, s, e)
            sources.append(os.path.join(tmp, f"segment-{i:05d}.txt"))
            with open(sources[-1], "wb") as f:
                f.write(memoryview(data)[s:e])
    clock = consumed.started if consumed else None
    for p, i, (s, e, n, _) in paced(pieces, a.rate, a.passes, a.duration, clock):
        # Full speed with a report to follow: keep `backlog` lines ahead of the system, never
        # more, so it always has input and the directory does not fill the disk.
        while consumed is not None and a.backlog and lines - consumed.get() > a.backlog:
            time.sleep(0.02)
        name = f"part-{p:03d}-{i:05d}.txt"
        if sources is not None:
            os.link(sources[i], os.path.join(a.dir, name))
        else:
            stamp(data, stamps, s, e)
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(memoryview(data)[s:e])
            os.rename(os.path.join(tmp, name), os.path.join(a.dir, name))
        lines += n
        nbytes += e - s
    return lines, nbytes, start_ms, time.time() * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["tcp", "files"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--rate", type=float, default=0, help="lines per second; 0 = full speed")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--duration", type=float, default=0,
                    help="seconds to feed, passing over the corpus as often as needed (0: --passes)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--accept-timeout", type=float, default=300)
    ap.add_argument("--linger", type=float, default=30)
    ap.add_argument("--keep-listening", action="store_true",
                    help="tcp: after a client goes away, feed the next one (restart benchmarks)")
    ap.add_argument("--dir")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--report", help="the system's JSONL report: --duration counts from its "
                    "first batch with records, so a slow start does not eat the measure")
    ap.add_argument("--link", action="store_true",
                    help="files at full speed: each file a hard link to one written once (see above)")
    ap.add_argument("--backlog", type=int, default=0,
                    help="files with --report: lines written and not yet taken, at most (0: no bound)")
    a = ap.parse_args()
    data, stamps, segments = load(a.corpus)
    consumed = Consumed(a.report) if a.report else None
    if a.mode == "tcp" and a.keep_listening:
        lines, nbytes, s, e = feed_tcp_restartable(a, data, stamps, plan(data, segments, a.rate))
    elif a.mode == "tcp":
        lines, nbytes, s, e = feed_tcp(a, data, stamps, plan(data, segments, a.rate), consumed)
    else:
        if not a.dir:
            ap.error("files needs --dir")
        if a.link and a.rate > 0:
            ap.error("--link is for full speed (--rate 0): its marker stamps are not fresh")
        lines, nbytes, s, e = feed_files(a, data, stamps, segments, consumed)
    print(json.dumps({"lines": lines, "bytes": nbytes, "start_ms": s, "end_ms": e,
                      "cpu_s": time.process_time()}), flush=True)


if __name__ == "__main__":
    main()
