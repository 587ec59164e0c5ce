"""Spark's side of `sluice bench recovery` (issue #9): the DStream job of bench/ killed with
SIGKILL and restarted from its checkpoint directory, as a supervised driver would be.

One trial: the TCP feeder (bench/feeder.py, `--keep-listening`, so it outlives its client)
sends the corpus at a fixed rate; `DStreamJob --recover` (1 s batches, `local[2]`, workload
`upper`, `StreamingContext.getOrCreate` on the checkpoint directory) runs until 3 batches have
completed, plus a phase into the next interval; the JVM's process group gets SIGKILL; the same
command starts again on the same checkpoint directory; the measure is the time from the kill
to the first `onBatchCompleted` of the new JVM (its report's first `done_ms`). Also: start to
first batch of the first JVM.

    python bench/recovery.py --prepare            # compile the jobs, make the corpus; JSON
    python bench/recovery.py --trial DIR [--phase-ms 0]   # one trial in DIR; one JSON line
    python bench/recovery.py --trials 3           # a few trials and a table (Spark alone)

Run it with the venv's python (`bench/spark/venv` makes the venv); `sluice bench recovery
--spark` does, alternating its own trials with these.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402

CORPUS_LINES = 200_000
BATCHES_BEFORE_KILL = 3


def log(msg):
    print(f"[recovery {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read_report(path):
    """The complete lines of a JSONL report (a line still being written is left out)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in text.split("\n")[:-1]:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def prepare(cfg):
    """Spark's home and version from the venv, the jobs' jar, the corpus."""
    py = os.path.join(cfg.venv, "bin", "python")
    probe = subprocess.run(
        [py, "-c", "import os, pyspark; print(pyspark.__version__); print(os.path.dirname(pyspark.__file__))"],
        capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"recovery: no pyspark in {cfg.venv} (make it with bench/spark/venv): "
                 f"{probe.stderr.strip()[-500:]}")
    version, home = probe.stdout.split()
    build = subprocess.run([os.path.join(HERE, "spark", "build"), cfg.venv],
                           capture_output=True, text=True)
    if build.returncode != 0:
        sys.exit(f"recovery: compiling the Spark jobs failed (bench/spark/build; javac 17 is "
                 f"needed): {build.stderr.strip()[-1500:]}")
    path = corpus.ensure(os.path.join(cfg.work, "corpus"), CORPUS_LINES, 42)
    return {"spark": version, "home": home, "jar": build.stdout.strip(), "corpus": path}


def start_feeder(cfg, prep, rundir):
    cmd = [sys.executable, os.path.join(HERE, "feeder.py"), "tcp", "--corpus", prep["corpus"],
           "--rate", str(cfg.rate), "--duration", "3600", "--keep-listening",
           "--accept-timeout", "300"]
    feeder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True,
                              stderr=open(os.path.join(rundir, "feeder.log"), "w"))
    first = feeder.stdout.readline().split()
    if len(first) != 2 or first[0] != "port":
        raise RuntimeError(f"the feeder did not start: {first}")
    return feeder, int(first[1])


def launch(cfg, prep, rundir, name, port):
    """One JVM of the job on the trial's checkpoint directory, writing `name`.jsonl."""
    env = dict(os.environ)
    env.update(SPARK_HOME=prep["home"], SPARK_LOCAL_IP="127.0.0.1",
               PATH=os.path.join(cfg.venv, "bin") + os.pathsep + env.get("PATH", ""))
    report = os.path.join(rundir, f"{name}.jsonl")
    cmd = [os.path.join(cfg.venv, "bin", "spark-submit"), "--master", "local[2]",
           "--driver-memory", cfg.spark_memory,
           "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2",
           "--class", "sluicebench.DStreamJob", prep["jar"],
           "--workload", "upper", "--report", report, "--idle-batches", "0",
           "--port", str(port), "--recover", "--checkpoint", os.path.join(rundir, "checkpoint")]
    if cfg.wal:
        cmd.append("--wal")
    with open(os.path.join(rundir, f"{name}.command"), "w") as f:
        f.write(" ".join(cmd) + "\n")
    out = open(os.path.join(rundir, f"{name}.log"), "w")
    launched_ms = time.time() * 1e3
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, report, launched_ms


def wait_batches(proc, report, n, timeout, what):
    deadline = time.time() + timeout
    while True:
        batches = read_report(report)
        if len(batches) >= n:
            return batches
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) after {len(batches)} batches; "
                               f"see {os.path.dirname(report)}")
        if time.time() > deadline:
            raise RuntimeError(f"{what}: {len(batches)} of {n} batches in {timeout} s")
        time.sleep(0.01)


def kill(proc):
    """SIGKILL to the JVM's process group; the kill time, epoch ms."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    at = time.time() * 1e3
    proc.wait()
    return at


def trial(cfg, prep, rundir):
    """Run, kill after 3 batches (and the phase), restart on the same checkpoint: the measures."""
    os.makedirs(rundir, exist_ok=True)
    feeder, port = start_feeder(cfg, prep, rundir)
    procs = []
    try:
        first, r1, launched = launch(cfg, prep, rundir, "run1", port)
        procs.append(first)
        b1 = wait_batches(first, r1, BATCHES_BEFORE_KILL, cfg.timeout, "the first JVM")
        time.sleep(cfg.phase_ms / 1e3)
        killed_ms = kill(first)
        second, r2, _ = launch(cfg, prep, rundir, "run2", port)
        procs.append(second)
        b2 = wait_batches(second, r2, 1, cfg.timeout, "the restarted JVM")
        kill(second)
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
        if feeder.poll() is None:
            os.killpg(feeder.pid, signal.SIGKILL)
            feeder.wait()
    result = {
        "recovery_ms": b2[0]["done_ms"] - killed_ms,
        "first_batch_ms": b1[0]["done_ms"] - launched,
        "resumed_at": b2[0].get("batch"),
        "first_records_in": b2[0].get("records_in"),
        "batches_before_kill": len(read_report(r1)),
        "restored_from_checkpoint": restored(rundir),
    }
    if not cfg.keep:
        shutil.rmtree(os.path.join(rundir, "checkpoint"), ignore_errors=True)
    return result


def restored(rundir):
    """Whether the restarted JVM says it read its context from the checkpoint."""
    try:
        with open(os.path.join(rundir, "run2.log"), errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return "sluice-bench: context restored from the checkpoint" in text


def pct(values, p):
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--prepare", action="store_true")
    what.add_argument("--trial", metavar="DIR")
    what.add_argument("--trials", type=int)
    ap.add_argument("--phase-ms", type=float, default=0,
                    help="how long after the 3rd completed batch the kill comes")
    ap.add_argument("--rate", type=int, default=200_000, help="lines/s the feeder sends")
    ap.add_argument("--no-wal", dest="wal", action="store_false",
                    help="without the receiver's write-ahead log (blocks in flight are lost)")
    ap.add_argument("--spark-memory", default="2g")
    ap.add_argument("--timeout", type=float, default=180, help="seconds a JVM gets for its batches")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint directory")
    ap.add_argument("--venv", default=os.environ.get("SLUICE_SPARK_VENV")
                    or os.path.expanduser("~/.cache/sluice/spark-venv"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/sluice/bench"))
    cfg = ap.parse_args()
    prep = prepare(cfg)
    if cfg.prepare:
        print(json.dumps(prep), flush=True)
        return
    if cfg.trial:
        print(json.dumps(trial(cfg, prep, cfg.trial)), flush=True)
        return
    root = os.path.join(cfg.work, "recovery", time.strftime("%Y-%m-%d-%H%M%S"))
    results = []
    for i in range(cfg.trials):
        cfg.phase_ms = 1000 * i / cfg.trials
        results.append(trial(cfg, prep, os.path.join(root, f"trial-{i}")))
        log(f"trial {i}: {results[-1]}")
    for key in ("recovery_ms", "first_batch_ms"):
        v = [r[key] for r in results]
        print(f"Spark {key}: min {min(v):.0f}, median {pct(v, 50):.0f}, max {max(v):.0f}")
    print(f"Spark recovery median: {pct([r['recovery_ms'] for r in results], 50):.0f} ms")


if __name__ == "__main__":
    main()
