"""Where sluice's time goes on each workload of bench/run (issue #16): one full-speed
throughput run of sluice per scenario, the same runs as bench/run's, with `perf record -g`
attached to the sluice process for a few seconds once two batches with records have finished.
`bench/profile` is the entry point; see bench/README.md, "Profiles".

Each scenario's profile is a text file (`bench/results/profiles/DATE/<scenario>.txt`): the run's
own figures (throughput and CPU, slowed a little by perf), then the CPU samples by thread
name, by binary (JIT'd WebAssembly shows as the perf map of the process, named by plugin function
with `SLUICE_WASM_PERFMAP=1`), by symbol (self), and the inclusive call-graph entries. The
perf.data stays in the run's directory under ~/.cache/sluice/bench/runs/ (not committed).
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import corpus  # noqa: E402
from measure import read_report  # noqa: E402


class Attach:
    """Starts `perf record` on the sluice process once two batches with records are done; the
    recording lasts `seconds` (or until the process exits)."""

    def __init__(self, seconds, freq):
        self.seconds = seconds
        self.freq = freq
        self.thread = None
        self.data = None
        self.started = None
        self.error = None

    def __call__(self, proc, rundir, report):
        self.data = os.path.join(rundir, "perf.data")
        self.thread = threading.Thread(target=self._record, args=(proc, report), daemon=True)
        self.thread.start()

    def _record(self, proc, report):
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if sum(1 for b in read_report(report) if b.get("records_in")) >= 2:
                break
            time.sleep(0.1)
        else:
            self.error = "no two batches with records within 120 s"
            return
        self.started = time.time()
        cmd = ["perf", "record", "-q", "-F", str(self.freq), "-g", "-p", str(proc.pid),
               "-o", self.data, "--", "sleep", str(self.seconds)]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            self.error = f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()[-400:]}"

    def join(self):
        if self.thread is not None:
            self.thread.join(timeout=self.seconds + 150)


def perf_report(data, *args):
    """`perf report` on `data` as text, without its comment lines."""
    cmd = ["perf", "report", "-i", data, "--stdio", "--no-header"] + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    # perf pads every row with empty columns ("-      -"): dropped.
    lines = [re.sub(r"(\s+-)+$", "", ln.rstrip()) for ln in done.stdout.splitlines()
             if ln.strip() and not ln.startswith("#")]
    if done.returncode != 0:
        lines.append(f"(perf report exited {done.returncode}: {done.stderr.strip()[-300:]})")
    return "\n".join(lines)


def write_profile(path, sc, m, attach, cfg):
    """The text profile of one scenario's run."""
    fmt = lambda v, f: f.format(v) if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    head = [
        f"# sluice profile: {sc.key} ({sc.title})",
        "",
        f"Command: bench/profile --scenarios {sc.key} --duration {cfg.duration:g} "
        f"--seconds {cfg.seconds:g} --freq {cfg.freq} "
        f"(perf record -F {cfg.freq} -g -p <sluice> for {cfg.seconds:g} s after the second "
        "batch with records).",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; load average "
        f"(1/5/15 min) before {' / '.join(f'{x:.2f}' for x in m.get('load_before', ()))}, "
        f"after {' / '.join(f'{x:.2f}' for x in m.get('load_after', ()))}.",
        f"Binary: {cfg.sluice_bin} (built "
        f"{datetime.datetime.fromtimestamp(os.path.getmtime(cfg.sluice_bin)).isoformat(timespec='seconds')}).",
        f"This run (perf attached, so a little slower than bench/run's): throughput "
        f"{fmt(m.get('throughput'), '{:,.0f}')} records/s, CPU {fmt(m.get('cpu_s_per_m'), '{:.3f}')} "
        f"CPU-s per million records, peak RSS {fmt(m.get('peak_rss_mib'), '{:.0f}')} MiB, "
        f"outcome: {m.get('outcome', m.get('na'))}.",
        "",
    ]
    if attach.error or not os.path.exists(attach.data or ""):
        body = [f"No profile: {attach.error or 'perf wrote nothing'}."]
    else:
        views = [
            ("CPU samples by thread name", ["--no-children", "--sort", "comm"], "0.5"),
            ("By binary (perf-PID.map: the JIT'd WebAssembly)",
             ["--no-children", "--sort", "dso"], "0.5"),
            ("By function, self time", ["--no-children", "--sort", "dso,symbol"], "0.4"),
            ("By function, with callees (inclusive)", ["--children", "--sort", "symbol"], "4"),
        ]
        body = []
        for title, args, limit in views:
            body += [f"## {title}", "",
                     perf_report(attach.data, *args, "-g", "none", "--percent-limit", limit), ""]
    with open(path, "w") as f:
        f.write("\n".join(head + body) + "\n")


def merge_runs(text):
    """perf's rows with each run's JIT map (`[JIT] tid N`) summed into one row per name."""
    rows, order = {}, []
    for ln in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", ln)
        if not m:
            continue
        key = re.sub(r"\[JIT\] tid \d+", "[JIT]", m.group(2))
        key = re.sub(r"\s{2,}", "  ", key)
        if key not in rows:
            order.append(key)
        rows[key] = rows.get(key, 0.0) + float(m.group(1))
    ranked = sorted(order, key=lambda k: -rows[k])
    return "\n".join(f"    {rows[k]:6.2f}%  {k}" for k in ranked if rows[k] >= 0.3)


def profile_plugins(cfg, out):
    """The plugin boundary's profiles (issue #16's identity and upper-case goals): `sluice
    bench plugins --only W` run `cfg.boundary_runs` times under one `perf record`, per workload.
    Writes plugins-<W>.txt in `out`; returns the failures."""
    failed = []
    for w in ("identity", "uppercase"):
        data = os.path.join(cfg.work, "runs", f"plugins-{w}.perf.data")
        os.makedirs(os.path.dirname(data), exist_ok=True)
        one = f"{cfg.sluice_bin} bench plugins --only {w} --plugins {cfg.plugins} >/dev/null"
        loop = f"for i in $(seq {cfg.boundary_runs}); do {one} || exit 1; done"
        cmd = ["perf", "record", "-q", "-F", str(cfg.freq), "-g", "-o", data, "--",
               "sh", "-c", loop]
        load = os.getloadavg()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        report = subprocess.run([cfg.sluice_bin, "bench", "plugins", "--only", w,
                                 "--plugins", cfg.plugins], capture_output=True, text=True)
        head = [
            f"# sluice profile: the plugin boundary, {w}",
            "",
            f"Command: bench/profile --boundary --boundary-runs {cfg.boundary_runs} --freq {cfg.freq} "
            f"(perf record -F {cfg.freq} -g over {cfg.boundary_runs} runs of "
            f"`sluice bench plugins --only {w}`: 10,000 records of 100 bytes a batch, the WASM "
            "call path and the native function alternating, so both are in the samples).",
            f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; load average "
            f"(1/5/15 min) before {' / '.join(f'{x:.2f}' for x in load)}.",
            f"Binary: {cfg.sluice_bin}.",
            "One more run without perf, for its figures:",
            "",
            *["    " + ln for ln in report.stdout.splitlines()],
            "",
        ]
        if done.returncode != 0 or not os.path.exists(data):
            body = [f"No profile: perf exited {done.returncode}: {done.stderr.strip()[-400:]}"]
            failed.append(f"plugins-{w}: perf exited {done.returncode}")
        else:
            body = []
            for title, args, limit in [
                ("By binary ([JIT]: the JIT'd WebAssembly, every run's perf map summed)",
                 ["--no-children", "--sort", "dso"], None),
                ("By function, self time (rows of 0.3% and more)",
                 ["--no-children", "--sort", "dso,symbol"], None),
                ("By function, with callees (inclusive)", ["--children", "--sort", "symbol"],
                 "2"),
            ]:
                # Self-time rows are merged across the runs' JIT maps, so perf cuts none.
                text = perf_report(data, *args, "-g", "none", "--percent-limit", limit or "0")
                body += [f"## {title}", "", text if limit else merge_runs(text), ""]
        path = os.path.join(out, f"plugins-{w}.txt")
        with open(path, "w") as f:
            f.write("\n".join(head + body) + "\n")
        bench.log(f"profile: {path}")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(s.key for s in bench.SCENARIOS))
    ap.add_argument("--duration", type=float, default=12, help="seconds of feeding per run")
    ap.add_argument("--seconds", type=float, default=5, help="seconds of perf recording")
    ap.add_argument("--freq", type=int, default=499, help="perf samples per second per CPU")
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/sluice/bench"))
    ap.add_argument("--out", default=None,
                    help="directory (default bench/results/profiles/DATE, never an existing one)")
    ap.add_argument("--boundary", action="store_true",
                    help="profile the plugin boundary (sluice bench plugins) instead")
    ap.add_argument("--boundary-runs", type=int, default=30,
                    help="with --boundary: runs of `sluice bench plugins` per workload")
    cfg = ap.parse_args()
    bench.short_runs(cfg, run_timeout=180)
    os.environ["SLUICE_WASM_PERFMAP"] = "1"  # names for the JIT'd plugin code in perf's view
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    root = os.path.join(cfg.work, "runs", stamp + "-profile")
    root = bench.unique_dir(root)
    out = cfg.out or bench.unused_path(os.path.join(
        HERE, "results", "profiles", datetime.date.today().isoformat()))
    os.makedirs(out, exist_ok=True)
    if cfg.boundary:
        failed = profile_plugins(cfg, out)
        for f in failed:
            bench.log(f"FAILED: {f}")
        return 1 if failed else 0
    cfg.corpus = corpus.ensure(os.path.join(cfg.work, "corpus"), cfg.lines, cfg.seed)
    sluice = bench.Sluice(cfg)
    sluice.probe(os.path.join(root, "probe"))
    wanted = cfg.scenarios.split(",")
    unknown = set(wanted) - {s.key for s in bench.SCENARIOS}
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    failed = []
    for sc in [s for s in bench.SCENARIOS if s.key in wanted]:
        if sluice.supports(sc):
            continue
        attach = Attach(cfg.seconds, cfg.freq)
        cfg.on_launch = attach
        rundir = os.path.join(root, sc.key)
        try:
            m = bench.run_one(cfg, sluice, sc, "throughput", 0, rundir)
        except Exception as e:  # one failed run is reported, the others go on
            m = {"outcome": f"failed: {e}"}
        attach.join()
        path = os.path.join(out, f"{sc.key}.txt")
        write_profile(path, sc, m, attach, cfg)
        if attach.error or m.get("outcome") != "ok":
            failed.append(f"{sc.key}: {attach.error or m.get('outcome')}")
        bench.log(f"profile: {path}")
    for f in failed:
        bench.log(f"FAILED: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
