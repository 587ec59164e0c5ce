"""The measures of one run: the process tree sampled from /proc, the batch report read, and
the summary (throughput over the steady-state batches, latency percentiles, CPU per million
records, peak RSS, launch to first batch). See bench/README.md, "The measures"."""

import json
import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# ---------------------------------------------------------------------------------------------
# The process tree, sampled from /proc


class TreeMonitor(threading.Thread):
    """Samples CPU time (user + system) and resident memory of a process and its descendants.
    A process that has exited keeps the CPU time it was last seen with."""

    def __init__(self, root, interval=0.2):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.samples = []  # (epoch s, cpu s, rss bytes)
        self.cpu_by_pid = {}
        self.stopping = threading.Event()

    @staticmethod
    def _stat(pid):
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        rest = s[s.rindex(b")") + 2:].split()
        # fields after the name: state ppid ... utime(14) stime(15) ... rss(24), 1-based overall
        return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[21]) * PAGE

    def sample(self):
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    stats[int(name)] = self._stat(name)
                except (OSError, ValueError, IndexError):
                    pass
        tree = {self.root}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        rss = 0
        for pid in tree:
            if pid in stats:
                self.cpu_by_pid[pid] = stats[pid][1]
                rss += stats[pid][2]
        self.samples.append((time.time(), sum(self.cpu_by_pid.values()), rss))

    def run(self):
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()

    def cpu_at(self, t):
        """CPU seconds of the tree at epoch `t`, interpolated between samples."""
        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0, _), (t1, c1, _) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0)
        return s[-1][1]

    def peak_rss(self):
        return max((r for _, _, r in self.samples), default=0)

    def total_cpu(self):
        return self.samples[-1][1] if self.samples else 0.0


# ---------------------------------------------------------------------------------------------
# Reports


def read_report(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(batches, mon, launch_ms, fed_lines, mode, warmup_s):
    """The measures of one run, from its batch report and process samples. Throughput and CPU
    come from the batches in steady state; latency and scheduling delay from the markers sent
    (and batches due) `warmup_s` after the first batch with records."""
    nonempty = [b for b in batches if b.get("records_in", 0) > 0]
    total_in = sum(b.get("records_in", 0) for b in batches)
    m = {
        "batches": len(batches),
        "nonempty_batches": len(nonempty),
        "records_in": total_in,
        "fed_lines": fed_lines,
        "peak_rss_mib": mon.peak_rss() / 2**20,
        "cpu_s_total": mon.total_cpu(),
        # Launch to the first batch *with data*, on both sides: an empty first batch (sluice's
        # clock ticks before the feeder connects; Spark's may not) would flatter whichever
        # system cuts empty batches.
        "first_batch_s": (nonempty[0]["done_ms"] - launch_ms) / 1e3 if nonempty else None,
    }
    short = len(nonempty) < 4
    steady = nonempty if short else nonempty[2:-1]
    m["steady_batches"] = len(steady)
    m["steady_short"] = short
    if len(nonempty) >= 2:
        before = nonempty[0] if short else nonempty[1]
        last = steady[-1]
        span = (last["done_ms"] - before["done_ms"]) / 1e3
        recs = sum(b["records_in"] for b in (nonempty[1:] if short else steady))
        if span > 0:
            m["throughput"] = recs / span
            cpu = mon.cpu_at(last["done_ms"] / 1e3) - mon.cpu_at(before["done_ms"] / 1e3)
            m["cpu_s_per_m"] = cpu / recs * 1e6 if recs else None
    cutoff = (nonempty[0]["done_ms"] + warmup_s * 1e3) if nonempty else 0
    # A marker's send time is its batch's commit time less its latency.
    lat = [x for b in batches for x in b.get("marker_latency_ms") or [] if b["done_ms"] - x >= cutoff]
    m["markers"] = len(lat)
    if lat:
        m["lat_p50_ms"] = pct(lat, 50)
        m["lat_p99_ms"] = pct(lat, 99)
        m["lat_max_ms"] = max(lat)
    sd = [b.get("scheduling_delay_ms", 0) for b in nonempty if b["time_ms"] >= cutoff]
    if sd:
        m["sched_p50_ms"] = pct(sd, 50)
        m["sched_max_ms"] = max(sd)
    m["mode"] = mode
    return m
