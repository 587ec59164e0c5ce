"""The sluice / Spark benchmark (issue #4): runs both systems alternately on the same input and
writes a report. `bench/run` is the entry point; see bench/README.md.

One run = one system, one scenario (workload x feeder x WAL), one mode:
- `throughput`: the feeder goes at full speed for --duration seconds (TCP: flow control paces
  it; files: it stays a bounded backlog ahead of the system), and the measure is records
  completed per second over the batches in steady state (the first two and the last
  non-empty batch dropped);
- `latency`: the feeder goes at a fixed rate both systems sustain, and the measure is the
  end-to-end latency of the marker lines (commit time minus send time).

Every run writes the same per-batch JSONL report (the `sluice run --report` format; the Spark
jobs write it too), and this script samples the system's process tree from /proc for CPU time
and resident memory.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import report as report_mod  # noqa: E402



class Scenario:
    """A workload on a feeder, with or without the receiver's write-ahead log."""

    def __init__(self, key, workload, feeder, wal, fsync=True):
        self.key = key
        self.workload = workload  # "upper" | "wordcount"
        self.feeder = feeder  # "tcp" | "files"
        self.wal = wal
        # sluice's `wal-fsync`. Spark's receiver log never syncs on a local checkpoint
        # directory (FileBasedWriteAheadLogWriter calls `hflush`, which Hadoop's raw local file
        # system implements as a `flush`), so Spark runs only the scenarios without it.
        self.fsync = fsync

    @property
    def twin(self):
        """The scenario without the WAL that this one is compared with."""
        return f"{self.key.split('-')[1]}-{self.feeder}" if self.wal else None

    @property
    def title(self):
        w = {"upper": "(a) upper-case + count", "wordcount": "(b) word count"}[self.workload]
        if self.wal:
            w = "(c) " + w[4:] + (" + WAL with fsync" if self.fsync
                                   else " + WAL without fsync (as Spark's)")
        return f"{w}, {self.feeder}"

    @property
    def spark_api(self):
        return "DStream" if self.feeder == "tcp" else "Structured Streaming"


SCENARIOS = [
    Scenario("a-tcp", "upper", "tcp", False),
    Scenario("b-tcp", "wordcount", "tcp", False),
    Scenario("a-files", "upper", "files", False),
    Scenario("b-files", "wordcount", "files", False),
    Scenario("c-a-tcp", "upper", "tcp", True),
    Scenario("c-b-tcp", "wordcount", "tcp", True),
    Scenario("c-a-tcp-nofsync", "upper", "tcp", True, fsync=False),
    Scenario("c-b-tcp-nofsync", "wordcount", "tcp", True, fsync=False),
]


# Each side's settings on the files workloads, per workload: the feeder's backlog (lines written
# and not yet taken, at full speed), sluice's partitions and Spark's maxFilesPerTrigger. The
# defaults are the best a recorded sweep found (`bench/sweep`, bench/results/DATE-sweep.md),
# kept in bench/settings.json; these are the fallback without it.
SETTINGS_FILE = os.path.join(HERE, "settings.json")
FALLBACK_FILES_SETTINGS = {
    "sluice": {"upper": {"backlog": 2_000_000, "partitions": 2},
               "wordcount": {"backlog": 2_000_000, "partitions": 2}},
    "Spark": {"upper": {"backlog": 2_000_000, "max_files": 100},
              "wordcount": {"backlog": 2_000_000, "max_files": 30}},
}


def load_files_settings(path=SETTINGS_FILE):
    """The files workloads' settings per side and workload: the fallback, overlaid with the
    `files` of bench/settings.json (the sweep's choice) when it exists."""
    out = json.loads(json.dumps(FALLBACK_FILES_SETTINGS))
    try:
        with open(path) as f:
            saved = json.load(f).get("files", {})
    except FileNotFoundError:
        saved = {}
    for system, workloads in saved.items():
        for workload, values in workloads.items():
            out.setdefault(system, {}).setdefault(workload, {}).update(values)
    return out


def files_setting(cfg, system, sc, key):
    """One setting of `system` ("sluice" or "Spark") on scenario `sc`'s workload."""
    return cfg.files[system][sc.workload][key]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# The measures (the process tree, the report, the summary) live in measure.py.
from measure import TreeMonitor, pct, read_report, summarize  # noqa: E402,F401




# ---------------------------------------------------------------------------------------------
# The systems


class Sluice:
    name = "sluice"

    def __init__(self, cfg):
        self.cfg = cfg
        self.bin = cfg.sluice_bin
        self.caps = {}

    def probe(self, workdir):
        """What this sluice binary supports of the benchmark contract."""
        helptext = subprocess.run([self.bin, "run", "--help"], capture_output=True, text=True).stdout
        self.caps["report"] = "--report" in helptext and not self.cfg.sluice_log_report
        self.caps["version"] = subprocess.run([self.bin, "--version"], capture_output=True,
                                              text=True).stdout.strip()
        os.makedirs(workdir, exist_ok=True)
        nofsync = next(s for s in SCENARIOS if s.wal and not s.fsync)
        for cap, sc, extra in (("latency-marker", SCENARIOS[0], {"latency_marker": True}),
                               ("wal", SCENARIOS[0], {"wal": True}),
                               ("wal-fsync", nofsync, {})):
            path = os.path.join(workdir, f"probe-{cap}.toml")
            with open(path, "w") as f:
                f.write(self.pipeline(sc, workdir, port=9, **extra))
            r = subprocess.run([self.bin, "validate", path, "--plugins", self.cfg.plugins],
                               capture_output=True, text=True)
            self.caps[cap] = r.returncode == 0
            if r.returncode != 0:
                self.caps[cap + "-why"] = (r.stderr.strip().splitlines() or ["?"])[-1][:300]
        log(f"sluice: {self.caps}")
        return self.caps

    def pipeline(self, sc, rundir, port=None, indir=None, latency_marker=None, wal=None):
        marker = self.caps.get("latency-marker") if latency_marker is None else latency_marker
        wal = sc.wal if wal is None else wal
        lines = [
            "# Written by bench/bench.py for one benchmark run.",
            "version = 1",
            f'name = "bench-{sc.key}"',
            f'plugins = "{self.cfg.plugins}"',
            'batch-interval = "1s"',
        ] + list(getattr(self.cfg, "sluice_set", None) or []) + [
            "",
            "[source]",
        ]
        if sc.feeder == "tcp":
            lines += ['kind = "tcp"', f'address = "127.0.0.1:{port}"', "end-on-close = true"]
        else:
            parts = files_setting(self.cfg, "sluice", sc, "partitions")
            lines += ['kind = "files"', f'path = "{indir}"', f"partitions = {parts}"]
        if marker:
            lines.append(f'latency-marker = "{corpus.MARKER_PREFIX.decode()}"')
        if wal:
            lines.append("wal = true")
            if not sc.fsync:
                lines.append("wal-fsync = false")
        if sc.workload == "upper":
            lines += ["", "[[transform]]", 'plugin = "uppercase"']
        else:
            # Combined map-side in the guest, as Spark's reduceByKey combines map-side:
            # each distinct word of a block once with its count, added up by count-by-key.
            lines += ["", "[[transform]]", 'plugin = "count-words"',
                      "", "[[transform]]", 'builtin = "repartition-by-key"',
                      "", "[[transform]]", 'builtin = "count-by-key"', "sum-values = true"]
        lines += ["", "[[sink]]", 'kind = "count"',
                  "", "[dead-letter]", f'path = "{os.path.join(rundir, "dead-letters")}"', ""]
        return "\n".join(lines)

    def supports(self, sc):
        if sc.wal and not self.caps.get("wal"):
            return "n/a (no WAL yet)"
        if sc.wal and not sc.fsync and not self.caps.get("wal-fsync"):
            return "n/a (no `wal-fsync` yet)"
        return None

    def launch(self, sc, rundir, report, port=None, indir=None):
        path = os.path.join(rundir, "pipeline.toml")
        with open(path, "w") as f:
            f.write(self.pipeline(sc, rundir, port=port, indir=indir))
        cmd = [self.bin, "run", path, "--plugins", self.cfg.plugins]
        errlog = open(os.path.join(rundir, "system.log"), "w")
        if self.caps.get("report"):
            cmd += ["--report", report]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog,
                                    start_new_session=True)
        else:
            # Before `--report`: the same fields from the JSON log's "Batch done." lines.
            cmd += ["--log-format", "json"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            threading.Thread(target=self._report_from_log, args=(proc, errlog, report),
                             daemon=True).start()
        return proc

    @staticmethod
    def _report_from_log(proc, errlog, report):
        with open(report, "w") as out:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace")
                errlog.write(line)
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                f = ev.get("fields", {})
                if f.get("message") != "Batch done.":
                    continue
                done = datetime.datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
                done_ms = done.timestamp() * 1e3
                out.write(json.dumps({
                    "batch": f.get("batch"),
                    "time_ms": round(done_ms - f.get("total_delay_ms", 0)),
                    "done_ms": round(done_ms),
                    "records_in": f.get("records_in", 0),
                    "records_out": f.get("records_out", 0),
                    "processing_ms": f.get("processing_ms"),
                    "scheduling_delay_ms": f.get("scheduling_delay_ms"),
                    "total_delay_ms": f.get("total_delay_ms"),
                    "marker_latency_ms": [],
                }) + "\n")
                out.flush()
        errlog.close()

    def ready(self, rundir, report):
        return True

    def stop(self, proc, rundir):
        # Ctrl-C: the receivers stop and what they received makes a last batch.
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass


class Spark:
    name = "Spark"

    def __init__(self, cfg):
        self.cfg = cfg
        self.version = None

    def prepare(self):
        py = os.path.join(self.cfg.venv, "bin", "python")
        self.version = subprocess.run([py, "-c", "import pyspark; print(pyspark.__version__)"],
                                      capture_output=True, text=True, check=True).stdout.strip()
        self.home = subprocess.run(
            [py, "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
            capture_output=True, text=True, check=True).stdout.strip()
        self.jar = subprocess.run([os.path.join(HERE, "spark", "build"), self.cfg.venv],
                                  capture_output=True, text=True, check=True).stdout.strip()
        log(f"Spark {self.version}: jobs in {self.jar}")

    def supports(self, sc):
        if sc.wal and sc.fsync:
            return ("n/a (Spark's receiver WAL does not fsync: `hflush` on a local directory; "
                    "its run is in the row without fsync)")
        return None

    def launch(self, sc, rundir, report, port=None, indir=None):
        env = dict(os.environ)
        env.update(SPARK_HOME=self.home, SPARK_LOCAL_IP="127.0.0.1",
                   PATH=os.path.join(self.cfg.venv, "bin") + os.pathsep + env.get("PATH", ""))
        common = ["--workload", sc.workload, "--report", report,
                  "--ready", os.path.join(rundir, "ready"),
                  "--stop-file", os.path.join(rundir, "stop"), "--idle-batches", "0"]
        if sc.feeder == "tcp":
            cls = "sluicebench.DStreamJob"
            args = ["--port", str(port)]
            if sc.wal:
                args += ["--wal", "--checkpoint", os.path.join(rundir, "checkpoint")]
        else:
            cls = "sluicebench.StructuredJob"
            args = ["--dir", indir, "--checkpoint", os.path.join(rundir, "checkpoint"),
                    "--max-files", str(files_setting(self.cfg, "Spark", sc, "max_files"))]
        cmd = [os.path.join(self.cfg.venv, "bin", "spark-submit"), "--master", "local[2]",
               "--driver-memory", self.cfg.spark_memory,
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.sql.shuffle.partitions=2",
               "--class", cls, self.jar] + common + args
        with open(os.path.join(rundir, "command"), "w") as f:
            f.write(" ".join(cmd) + "\n")
        errlog = open(os.path.join(rundir, "system.log"), "w")
        return subprocess.Popen(cmd, env=env, stdout=errlog, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def ready(self, rundir, report):
        return os.path.exists(os.path.join(rundir, "ready"))

    def stop(self, proc, rundir):
        open(os.path.join(rundir, "stop"), "w").close()


# ---------------------------------------------------------------------------------------------
# One run


def start_feeder(cfg, sc, mode, rate, rundir, report, backlog=0):
    cmd = [sys.executable, os.path.join(HERE, "feeder.py"), sc.feeder, "--corpus", cfg.corpus,
           "--rate", str(rate if mode == "latency" else 0), "--report", report]
    if cfg.passes:
        cmd += ["--passes", str(cfg.passes[mode])]
    else:
        cmd += ["--duration", str(cfg.duration + (cfg.warmup if mode == "latency" else 0))]
    indir = None
    if sc.feeder == "files":
        indir = os.path.join(rundir, "in")
        os.makedirs(indir)
        cmd += ["--dir", indir, "--tmp-dir", os.path.join(rundir, "feed-tmp")]
        if mode == "throughput":
            # Links to files written once: the feeder's own writes were the ceiling (bench/README).
            cmd += ["--backlog", str(backlog), "--link"]
    feeder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(rundir, "feeder.log"), "w"),
                              text=True, start_new_session=True)
    port = None
    if sc.feeder == "tcp":
        first = feeder.stdout.readline().split()
        if len(first) != 2 or first[0] != "port":
            raise RuntimeError(f"feeder did not start: {first}")
        port = int(first[1])
    else:
        feeder.stdout.readline()  # "ready"
    return feeder, port, indir


def run_one(cfg, system, sc, mode, rate, rundir):
    os.makedirs(rundir, exist_ok=True)
    report = os.path.join(rundir, "report.jsonl")
    load_before = os.getloadavg()
    delayed_feed = sc.feeder == "files" and mode == "latency"
    feeder = port = indir = None
    backlog = files_setting(cfg, system.name, sc, "backlog") if sc.feeder == "files" else 0
    if not delayed_feed:
        feeder, port, indir = start_feeder(cfg, sc, mode, rate, rundir, report, backlog)
    else:
        indir = os.path.join(rundir, "in")
        os.makedirs(indir)
    launch_ms = time.time() * 1e3
    proc = system.launch(sc, rundir, report, port=port, indir=indir)
    if getattr(cfg, "on_launch", None):
        cfg.on_launch(proc, rundir, report)  # bench/profile.py attaches perf
    mon = TreeMonitor(proc.pid)
    mon.start()
    deadline = time.time() + cfg.run_timeout
    fed = None
    feed = {}
    stop_sent = None
    last_total, last_change = -1, time.time()
    longest_gap = 0.0
    outcome = "ok"
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.time()
        if delayed_feed and feeder is None:
            if system.ready(rundir, report) or now - launch_ms / 1e3 > cfg.ready_timeout:
                # The files feeder at a fixed rate starts once the system listens for files.
                os.rmdir(indir)
                feeder, _, indir = start_feeder(cfg, sc, mode, rate, rundir, report)
            continue
        if fed is None and feeder.poll() is not None:
            try:
                feed = json.loads(feeder.stdout.read().strip().splitlines()[-1])
                fed = feed["lines"]
            except (ValueError, IndexError, KeyError):
                fed = 0
                outcome = "feeder failed"
        total = sum(b.get("records_in", 0) for b in read_report(report))
        if total != last_total:
            if last_total > 0:
                longest_gap = max(longest_gap, now - last_change)
            last_total, last_change = total, now
        # The sweep's short runs stop with the feed: what is still queued is not waited for.
        no_drain = getattr(cfg, "no_drain", False)
        # Idle: no batch for the idle timeout, or for twice the longest wait between batches
        # seen (Spark at 800 files per trigger takes 13 s and more a batch on 2 cores).
        idle = now - last_change > max(cfg.idle_timeout, 2 * longest_gap)
        if stop_sent is None and fed is not None and (total >= fed or idle or no_drain):
            if total < fed and not no_drain:
                outcome = f"idle with {fed - total} records missing"
            system.stop(proc, rundir)
            stop_sent = now
        if stop_sent is not None and now - stop_sent > 60:
            outcome += "; killed after stop"
            os.killpg(proc.pid, signal.SIGKILL)
        if now > deadline:
            outcome = "timed out"
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    mon.stop()
    if feeder is not None and feeder.poll() is None:
        os.killpg(feeder.pid, signal.SIGKILL)
        feeder.wait()
    if fed is None and feeder is not None:
        try:
            fed = json.loads((feeder.stdout.read() or "").strip().splitlines()[-1])["lines"]
        except (ValueError, IndexError, KeyError):
            fed = 0
    time.sleep(0.3)  # the log-reading thread writes the last line
    batches = read_report(report)
    m = summarize(batches, mon, launch_ms, fed or 0, mode, cfg.warmup if mode == "latency" else 0)
    if feed.get("end_ms", 0) > feed.get("start_ms", 0):
        m["fed_rate"] = feed["lines"] / ((feed["end_ms"] - feed["start_ms"]) / 1e3)
        if mode == "latency" and m["fed_rate"] < 0.95 * rate and outcome == "ok":
            outcome = f"fed {m['fed_rate']:.0f} lines/s, not {rate}: the system held the feeder back"
    m.update(system=system.name, scenario=sc.key, rate=rate if mode == "latency" else None,
             exit=proc.returncode, outcome=outcome, load_before=load_before,
             load_after=os.getloadavg(), rundir=rundir)
    if m["records_in"] != (fed or 0) and outcome == "ok" and not getattr(cfg, "no_drain", False):
        m["outcome"] = f"{m['records_in']:,} of {fed:,} records in finished batches"
    if proc.returncode not in (0, None):
        m["outcome"] += f"; exit {proc.returncode}"
    try:
        with open(os.path.join(rundir, "system.log"), errors="replace") as f:
            if "OutOfMemoryError" in f.read():
                m["outcome"] += "; OutOfMemoryError in the log"
    except OSError:
        pass
    m["feeder_cpu_s"] = feed.get("cpu_s")
    # The input directory of a files run is big; the report stays.
    for d in ("in", "feed-tmp", "checkpoint"):
        shutil.rmtree(os.path.join(rundir, d), ignore_errors=True)
    log(f"{system.name:6} {sc.key:8} {mode:10} -> "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in m.items() if k in ("throughput", "lat_p50_ms", "lat_p99_ms",
                                                    "cpu_s_per_m", "peak_rss_mib", "first_batch_s",
                                                    "records_in", "outcome")))
    return m


def latency_rate(results, sc):
    """Half the lower throughput of the two systems in this scenario's clean throughput runs,
    rounded down; a WAL scenario takes its twin's rate, so that the WAL's cost shows."""
    if sc.wal:
        twin = next((r["rate"] for r in results if r["mode"] == "latency" and r.get("rate")
                     and r["scenario"] == sc.twin), None)
        if twin:
            return twin
    thr = [r["throughput"] for r in results
           if r["scenario"] == sc.key and r["mode"] == "throughput" and r.get("throughput")
           and r.get("outcome") == "ok"]
    return nice_rate(min(thr) / 2) if thr else 50_000


def nice_rate(r):
    """A round rate at most `r`: two significant digits."""
    if r <= 0:
        return 0
    mag = 10 ** (len(str(int(r))) - 2)
    return max(1000, int(r // mag * mag))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="about 10 s, sluice only, small corpus; writes a well-formed table")
    ap.add_argument("--systems", default=None, help="comma list of sluice,spark")
    ap.add_argument("--scenarios", default=None, help="comma list of " + ",".join(s.key for s in SCENARIOS))
    ap.add_argument("--modes", default="throughput,latency")
    ap.add_argument("--lines", type=int, default=2_000_000, help="corpus lines")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--duration", type=float, default=20,
                    help="seconds of feeding per run, from the system's first batch with records")
    ap.add_argument("--warmup", type=float, default=15,
                    help="latency runs: seconds fed (and not measured) before the --duration")
    ap.add_argument("--rate", type=float, default=0,
                    help="lines/s of the latency runs; 0: half the lower throughput of the two")
    ap.add_argument("--backlog", type=int, default=None,
                    help="files, full speed: lines the feeder keeps ahead of what the system "
                    "has taken, for both sides (default: each side's in bench/settings.json)")
    ap.add_argument("--spark-memory", default="2g",
                    help="spark-submit --driver-memory (local mode: the whole of Spark); at 1g "
                    "a full-speed DStream run died of OutOfMemoryError")
    ap.add_argument("--spark-max-files-upper", type=int, default=None,
                    help="Spark's maxFilesPerTrigger on a-files (default: bench/settings.json)")
    ap.add_argument("--spark-max-files-wordcount", type=int, default=None,
                    help="Spark's maxFilesPerTrigger on b-files (default: bench/settings.json)")
    ap.add_argument("--sluice-files-partitions", type=int, default=None,
                    help="sluice's files source partitions (default: bench/settings.json)")
    ap.add_argument("--sluice-set", action="append", metavar="KEY=VALUE",
                    help="a top-level line of sluice's pipeline file, as TOML (e.g. "
                    "'queue-target = \"0s\"'); repeatable, for comparisons")
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/sluice/spark-venv"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/sluice/bench"))
    ap.add_argument("--out", default=None, help="the report file (default bench/results/DATE.md)")
    ap.add_argument("--run-timeout", type=float, default=300)
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per cell, alternating the systems' order; the table shows the "
                    "median and the range (default 3; --smoke: 1)")
    ap.add_argument("--sluice-log-report", action="store_true",
                    help="read sluice's batches from its JSON log even if it has --report "
                    "(the path for a sluice from before --report)")
    ap.add_argument("--from-json", metavar="RESULTS_JSON",
                    help="write the report again from a run's results.json (no runs)")
    cfg = ap.parse_args()
    if cfg.from_json:
        with open(cfg.from_json) as f:
            saved = json.load(f)
        meta = saved["meta"]
        out = cfg.out or os.path.join(HERE, "results", meta["date"][:10] + ("-smoke" if meta["smoke"] else "") + ".md")
        systems = [s for s in ("sluice", "Spark") if any(r["system"] == s for r in saved["results"])]
        report_mod.check_tables(report_mod.write(out, meta, saved["results"], SCENARIOS, systems))
        log(f"report: {out}")
        return 0
    cfg.files = files_settings_from_args(cfg)
    if cfg.smoke:
        # A fixed amount rather than a time: a few seconds in all, whatever the start-up.
        cfg.lines = min(cfg.lines, 100_000)
        cfg.passes = {"throughput": 5, "latency": 2}
        cfg.warmup = 0
        cfg.systems = cfg.systems or "sluice"
        cfg.scenarios = cfg.scenarios or "a-tcp,b-tcp,a-files,c-a-tcp"
        for workloads in cfg.files.values():
            for values in workloads.values():
                values["backlog"] = min(values["backlog"], 500_000)
        cfg.rate = cfg.rate or 100_000
    else:
        cfg.passes = None
    cfg.repeat = max(1, cfg.repeat or (1 if cfg.smoke else 3))
    cfg.systems = (cfg.systems or "sluice,spark").split(",")
    scenarios = [s for s in SCENARIOS if cfg.scenarios is None or s.key in cfg.scenarios.split(",")]
    modes = cfg.modes.split(",")
    cfg.idle_timeout = 10
    cfg.ready_timeout = 120

    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/sluice/target")
    cfg.sluice_bin = os.path.join(target, "release", "sluice")
    cfg.plugins = os.environ.get("SLUICE_PLUGINS") or os.path.join(target, "sluice-plugins", "plugins")

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    rundir_root = unique_dir(os.path.join(cfg.work, "runs", stamp + ("-smoke" if cfg.smoke else "")))
    cfg.corpus = corpus.ensure(os.path.join(cfg.work, "corpus"), cfg.lines, cfg.seed)

    systems = []
    if "sluice" in cfg.systems:
        s = Sluice(cfg)
        s.probe(os.path.join(rundir_root, "probe"))
        systems.append(s)
    if "spark" in cfg.systems:
        sp = Spark(cfg)
        sp.prepare()
        systems.append(sp)

    started = time.time()
    load_start = os.getloadavg()
    results = []
    rates = {}  # per scenario, fixed by the first repeat's throughput runs
    for rep in range(cfg.repeat):
        # Alternately, on the same input: sluice then Spark, then Spark then sluice, ... so
        # neither always runs on a machine the other just warmed (or loaded).
        order = systems if rep % 2 == 0 else systems[::-1]
        for mode in modes:
            for sc in scenarios:
                rate = 0
                if mode == "latency":
                    rate = rates.setdefault(sc.key, cfg.rate or latency_rate(results, sc))
                for system in order:
                    results.append(run_cell(cfg, system, sc, mode, rate, rundir_root, rep))
                    # A long run stopped early still leaves its cells: `--from-json` reads it.
                    with open(os.path.join(rundir_root, "results-so-far.json"), "w") as f:
                        json.dump({"meta": run_meta(cfg, systems, started, load_start,
                                                    rundir_root), "results": results}, f)

    meta = run_meta(cfg, systems, started, load_start, rundir_root)
    if "sluice" in cfg.systems:
        meta["plugin_bench"] = plugin_bench(cfg)
    out = cfg.out or unused_path(os.path.join(
        HERE, "results", datetime.date.today().isoformat() + ("-smoke" if cfg.smoke else "") + ".md"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(os.path.join(rundir_root, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    md = report_mod.write(out, meta, results, SCENARIOS, [s.name for s in systems])
    print(md)
    log(f"report: {out} (raw runs in {rundir_root})")
    report_mod.check_tables(md)
    failures = sluice_failures(meta, results)
    for f in failures:
        log(f"FAILED: {f}")
    return 1 if failures else 0


def run_meta(cfg, systems, started, load_start, rundir_root):
    """The conditions of a run (so far), for the report."""
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": cfg.smoke,
        "elapsed_s": time.time() - started,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}",
        "cpu_model": cpu_model(),
        "mem_gib": mem_gib(),
        "corpus": {"path": cfg.corpus, "lines": cfg.lines, "seed": cfg.seed,
                   "vocabulary": corpus.VOCABULARY, "words_per_line": corpus.WORDS_PER_LINE,
                   "marker_every": corpus.MARKER_EVERY},
        "duration_s": cfg.duration,
        "warmup_s": cfg.warmup,
        "passes": cfg.passes,
        "repeat": cfg.repeat,
        "backlog": max(v["backlog"] for w in cfg.files.values() for v in w.values()),
        "files_settings": cfg.files,
        "systems": {},
        "rundir": rundir_root,
        "git": git_describe(),
    }
    for s in systems:
        if isinstance(s, Sluice):
            meta["systems"]["sluice"] = {"version": s.caps.get("version"), "caps": s.caps,
                                         "binary": s.bin, "built": mtime(s.bin)}
        else:
            meta["systems"]["Spark"] = {"version": s.version, "java": java_version(),
                                        "memory": cfg.spark_memory,
                                        "max_files": {w: v["max_files"] for w, v
                                                      in cfg.files["Spark"].items()}}
    return meta


def files_settings_from_args(cfg):
    """bench/settings.json's files settings with the command line's overrides."""
    files = load_files_settings()
    for system in files.values():
        for values in system.values():
            if cfg.backlog is not None:
                values["backlog"] = cfg.backlog
    for workload, arg in (("upper", cfg.spark_max_files_upper),
                          ("wordcount", cfg.spark_max_files_wordcount)):
        if arg is not None:
            files["Spark"][workload]["max_files"] = arg
    if cfg.sluice_files_partitions is not None:
        for values in files["sluice"].values():
            values["partitions"] = cfg.sluice_files_partitions
    return files


def run_cell(cfg, system, sc, mode, rate, rundir_root, rep):
    """One run of one cell (repeat `rep`), or why it could not run."""
    why = system.supports(sc)
    if why:
        return {"system": system.name, "scenario": sc.key, "mode": mode, "na": why, "repeat": rep}
    name = f"{sc.key}-{mode}-{system.name.lower()}" + (f"-{rep + 1}" if rep else "")
    try:
        r = run_one(cfg, system, sc, mode, rate, os.path.join(rundir_root, name))
    except Exception as e:  # one failed run is reported, the others go on
        log(f"{system.name} {sc.key} {mode}: failed: {e}")
        r = {"system": system.name, "scenario": sc.key, "mode": mode, "na": f"failed: {e}"}
    r["repeat"] = rep
    return r


def short_runs(cfg, run_timeout):
    """Sets what `run_one` reads from `cfg` for the full-speed runs of the sweep and the
    profiles: no warm-up, a run stops with its feed (no drain), sluice from the target dir."""
    cfg.passes = None
    cfg.warmup = 0
    cfg.idle_timeout = 10
    cfg.ready_timeout = 120
    cfg.run_timeout = run_timeout
    cfg.sluice_log_report = False
    cfg.no_drain = True
    cfg.files = load_files_settings()
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/sluice/target")
    cfg.sluice_bin = os.path.join(target, "release", "sluice")
    cfg.plugins = os.environ.get("SLUICE_PLUGINS") or os.path.join(target, "sluice-plugins", "plugins")


def unique_dir(path):
    """Makes and returns `path`, or `path-2`, `path-3`, ... when it exists: two runs started
    in the same second never share a run directory (nor sluice's checkpoint directory)."""
    n, candidate = 2, path
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            candidate = f"{path}-{n}"
            n += 1


def unused_path(path):
    """`path`, or `path` with -2, -3, ... before its extension when it (or its chart, the .png
    beside it) exists: an earlier results file is never overwritten."""
    base, ext = os.path.splitext(path)
    stem, n = base, 2
    while os.path.exists(stem + ext) or os.path.exists(stem + ".png"):
        stem = f"{base}-{n}"
        n += 1
    return stem + ext


def sluice_failures(meta, results):
    """What of sluice's part failed: a run that exited non-zero or could not run, a probe that
    found a capability missing, the plugin micro-benchmark's exit. Spark's failures are
    reported in the table and do not fail the benchmark."""
    out = []
    for r in results:
        if r["system"] != "sluice":
            continue
        if str(r.get("na", "")).startswith("failed"):
            out.append(f"sluice {r['scenario']} {r['mode']}: {r['na']}")
        elif r.get("exit") not in (0, None):
            out.append(f"sluice {r['scenario']} {r['mode']}: exit {r['exit']} ({r.get('outcome')}); "
                       f"log: {r.get('rundir')}/system.log")
        elif "na" not in r and not r.get("records_in"):
            out.append(f"sluice {r['scenario']} {r['mode']}: no record went through")
    caps = meta.get("systems", {}).get("sluice", {}).get("caps", {})
    for cap in ("latency-marker", "wal"):
        if caps and not caps.get(cap):
            out.append(f"sluice probe: `{cap}` refused: {caps.get(cap + '-why', '?')}")
    pb = meta.get("plugin_bench")
    if pb and pb.get("exit") not in (0, None):
        out.append(f"`{pb['command']}` exited {pb['exit']}")
    return out


def plugin_bench(cfg):
    cmd = [cfg.sluice_bin, "bench", "plugins", "--plugins", cfg.plugins]
    if cfg.smoke:
        cmd.append("--quick")
    r = subprocess.run(cmd, capture_output=True, text=True)
    return {"command": "sluice " + " ".join(cmd[1:]).replace(cfg.plugins, "$SLUICE_PLUGINS"),
            "output": r.stdout.strip() or r.stderr.strip()[-2000:], "exit": r.returncode}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def mem_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


def java_version():
    r = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return (r.stderr.splitlines() or ["?"])[0]


def git_describe():
    r = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return r.stdout.strip()


def mtime(path):
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
