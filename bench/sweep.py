"""The files workloads' best settings, per side (issue #16): a short throughput run for each
value of each setting, one setting at a time (the others at their best so far), both sides
alike; the best value per side and workload goes into bench/settings.json, which `bench/run`
takes as its defaults, and the whole table into bench/results/DATE-sweep.md.

What is swept (`GRID`): the feeder's backlog (lines written ahead of what the system has
taken) for both sides, sluice's files partitions, Spark's maxFilesPerTrigger. A setting that a
side does not have is not swept for it. Runs are short (--duration, default 12 s of feeding
after the first batch with records; the run stops with the feed, the backlog left is not
waited for), so the whole sweep stays within about ten minutes; a
value must beat the best so far by --margin (default 5 %) to replace it, so noise on a shared
machine does not move a setting for nothing.
"""

import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import corpus  # noqa: E402

# Per side, the settings in the order they are swept, and their values per workload.
GRID = {
    "sluice": [
        # 32 M: after the files source's rework (2026-12-05) 8 M lines capped sluice at 8 M
        # lines per 1 s batch.
        ("backlog", {"upper": [2_000_000, 8_000_000, 32_000_000],
                     "wordcount": [2_000_000, 8_000_000, 32_000_000]}),
        ("partitions", {"upper": [1, 2, 4], "wordcount": [1, 2, 4]}),
    ],
    "Spark": [
        # 480 and 32 M (2026-12-06): 240 was the largest tried and chosen for word count, and
        # sluice's side tries 32 M lines of backlog, so Spark's does too.
        ("max_files", {"upper": [100, 400, 800], "wordcount": [30, 120, 240, 480]}),
        ("backlog", {"upper": [2_000_000, 8_000_000, 32_000_000],
                     "wordcount": [2_000_000, 8_000_000, 32_000_000]}),
    ],
}


def choose(tried, margin):
    """The best of `tried` ([(value, throughput or None)], the current value first): the
    fastest, if it beats the first by more than `margin` (a fraction); else the first."""
    first_value, first_thr = tried[0]
    best_value, best_thr = first_value, first_thr or 0
    for value, thr in tried[1:]:
        if thr and thr > best_thr * (1 + margin) and thr > (first_thr or 0) * (1 + margin):
            best_value, best_thr = value, thr
    return best_value


def sweep_side(cfg, system, sc, start, run):
    """Sweeps `system`'s settings on `sc` from `start` (its settings); `run(settings)` gives a
    throughput (or None). Returns the best settings and the rows tried."""
    current = dict(start)
    rows = []
    measured = {}

    def measure(settings):
        key = json.dumps(settings, sort_keys=True)
        if key not in measured:
            measured[key] = run(dict(settings))
            rows.append((dict(settings), measured[key]))
        return measured[key]

    for name, values in GRID[system.name]:
        tried = [(current[name], measure(current))]
        for v in values[sc.workload]:
            if v != current[name]:
                tried.append((v, measure({**current, name: v})))
        current[name] = choose(tried, cfg.margin)
    return current, rows


def write_markdown(path, meta, table, best, swept):
    L = [f"# Files settings sweep: {meta['date']}", "",
         f"`bench/sweep` (bench/sweep.py): one throughput run of {meta['duration_s']:.0f} s per "
         f"value, one setting at a time, the others at their best so far; a value replaces the "
         f"current one only when it is more than {meta['margin'] * 100:.0f} % faster. Spark "
         f"{meta['spark_version']}, {meta['sluice_version']} ({meta['git']}). Load "
         f"average (1/5/15 min) at start {fmt_load(meta['load_start'])}, at end "
         f"{fmt_load(meta['load_end'])}; elapsed {meta['elapsed_s'] / 60:.1f} min. Single short "
         f"runs on a shared 2-core machine: trust differences far above the margin only.", "",
         "| side | scenario | backlog, lines | partitions | maxFilesPerTrigger | throughput, records/s | load 1 min | outcome |",
         "|---|---|---|---|---|---|---|---|"]
    for r in table:
        s = r["settings"]
        thr = f"{r['throughput']:,.0f}" if r.get("throughput") else "n/a"
        L.append(f"| {r['system']} | {r['scenario']} | {s.get('backlog', 0):,} | "
                 f"{s.get('partitions', '')} | {s.get('max_files', '')} | {thr} | "
                 f"{r.get('load', 0):.2f} | {r.get('outcome', '')} |")
    L += ["", "## Chosen (now bench/settings.json, `bench/run`'s defaults)", "",
          "| side | workload | settings |", "|---|---|---|"]
    for system, workloads in best.items():
        for workload, settings in workloads.items():
            note = "" if (system, workload) in swept else " (not swept this time: kept)"
            L.append(f"| {system} | {workload} | "
                     + ", ".join(f"{k} {v:,}" for k, v in sorted(settings.items())) + note + " |")
    text = "\n".join(L) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def fmt_load(load):
    return " / ".join(f"{x:.2f}" for x in load)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="sluice,spark")
    ap.add_argument("--scenarios", default="a-files,b-files")
    ap.add_argument("--duration", type=float, default=12,
                    help="seconds of feeding per run after the first batch with records; the "
                    "run stops with the feed (the backlog left is not waited for)")
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--spark-memory", default="2g")
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/sluice/spark-venv"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/sluice/bench"))
    ap.add_argument("--out", default=None, help="default bench/results/DATE-sweep.md")
    ap.add_argument("--no-write-settings", action="store_true",
                    help="leave bench/settings.json as it is")
    cfg = ap.parse_args()
    bench.short_runs(cfg, run_timeout=120)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    root = os.path.join(cfg.work, "runs", stamp + "-sweep")
    root = bench.unique_dir(root)
    cfg.corpus = corpus.ensure(os.path.join(cfg.work, "corpus"), cfg.lines, cfg.seed)

    systems = []
    if "sluice" in cfg.systems.split(","):
        s = bench.Sluice(cfg)
        s.probe(os.path.join(root, "probe"))
        systems.append(s)
    spark_version = "not run"
    if "spark" in cfg.systems.split(","):
        sp = bench.Spark(cfg)
        sp.prepare()
        spark_version = sp.version
        systems.append(sp)
    scenarios = [s for s in bench.SCENARIOS if s.key in cfg.scenarios.split(",")]

    started, load_start = time.time(), os.getloadavg()
    table = []
    best = json.loads(json.dumps(cfg.files))
    n = [0]
    for sc in scenarios:
        for system in systems:
            def run(settings, system=system, sc=sc):
                cfg.files[system.name][sc.workload] = settings
                n[0] += 1
                rundir = os.path.join(root, f"{sc.key}-{system.name.lower()}-{n[0]}")
                try:
                    m = bench.run_one(cfg, system, sc, "throughput", 0, rundir)
                except Exception as e:  # one failed run is a row, the sweep goes on
                    m = {"outcome": f"failed: {e}"}
                # A short run (fewer than four batches with records: Spark's first batch came
                # late) still counts, over its batches after the first: the sweep compares a
                # side with itself.
                ok = m.get("outcome") == "ok"
                outcome = str(m.get("outcome")) + (" (short)" if m.get("steady_short") else "")
                table.append({"system": system.name, "scenario": sc.key, "settings": settings,
                              "throughput": m.get("throughput"), "outcome": outcome,
                              "load": (m.get("load_before") or os.getloadavg())[0]})
                return m.get("throughput") if ok else None

            # From the largest backlog: a smaller one is kept only if it is faster.
            start = dict(cfg.files[system.name][sc.workload])
            start["backlog"] = max(dict(GRID[system.name])["backlog"][sc.workload])
            chosen, _ = sweep_side(cfg, system, sc, start, run)
            best[system.name][sc.workload] = chosen
            cfg.files[system.name][sc.workload] = chosen
            bench.log(f"sweep: {system.name} {sc.key}: best {chosen}")

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "duration_s": cfg.duration, "margin": cfg.margin, "elapsed_s": time.time() - started,
            "load_start": load_start, "load_end": os.getloadavg(), "git": bench.git_describe(),
            "spark_version": spark_version,
            "sluice_version": next((s.caps.get("version") for s in systems
                                    if isinstance(s, bench.Sluice)), "not run")}
    out = cfg.out or bench.unused_path(os.path.join(
        HERE, "results", datetime.date.today().isoformat() + "-sweep.md"))
    swept = {(s.name, sc.workload) for s in systems for sc in scenarios}
    print(write_markdown(out, meta, table, best, swept))
    with open(os.path.join(root, "sweep.json"), "w") as f:
        json.dump({"meta": meta, "table": table, "best": best}, f, indent=1)
    if not cfg.no_write_settings:
        with open(bench.SETTINGS_FILE, "w") as f:
            json.dump({"swept": meta["date"], "sweep": os.path.relpath(out, HERE),
                       "files": best}, f, indent=1, sort_keys=True)
            f.write("\n")
    bench.log(f"sweep: {out}; settings: {bench.SETTINGS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
