"""The benchmark report: a Markdown table with a sluice/Spark ratio per workload and measure, the
run conditions, the plugin micro-benchmark, and a PNG chart of throughput and latency."""

import os

NA = "n/a"


def fmt(v, kind):
    if v is None:
        return NA
    if kind == "rate":
        return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"
    if kind == "ms":
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if kind == "s":
        return f"{v:.1f}"
    if kind == "mib":
        return f"{v:,.0f}"
    if kind == "cpu":
        return f"{v:.2f}"
    if kind == "pct":
        return f"{v:+.0f} %"
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return NA
    r = a / b
    return f"{r:.2f}" if r < 100 else f"{r:.0f}"


# measure label, mode it comes from, field, format
MEASURES = [
    ("throughput, records/s (full speed, steady state)", "throughput", "throughput", "rate"),
    ("marker latency p50, ms (fixed rate)", "latency", "lat_p50_ms", "ms"),
    ("marker latency p99, ms", "latency", "lat_p99_ms", "ms"),
    ("marker latency max, ms", "latency", "lat_max_ms", "ms"),
    ("scheduling delay p50 / max, ms (fixed rate; no ratio: not defined alike, see Measures)",
     "latency", ("sched_p50_ms", "sched_max_ms"), "ms"),
    ("CPU-s per million records (full speed, steady state)", "throughput", "cpu_s_per_m", "cpu"),
    ("peak RSS of the process tree, MiB (full speed)", "throughput", "peak_rss_mib", "mib"),
    ("launch to first finished batch, s", "throughput", "first_batch_s", "s"),
]


# The fields whose spread over repeated runs the table shows beside the median.
RANGED = ("throughput", "lat_p50_ms", "lat_p99_ms", "cpu_s_per_m", "first_batch_s")


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(results):
    """One cell per (system, scenario, mode) from its repeated runs: the median of every number
    over the runs that ran, `<field>_range` = (min, max) for the fields in RANGED, `runs` = how
    many; a cell none of whose runs ran keeps the first run's reason. Non-numeric fields (the
    outcome) come from the run nearest the median throughput, or the first."""
    groups = {}
    for r in results:
        groups.setdefault((r["system"], r["scenario"], r["mode"]), []).append(r)
    cells = []
    for runs in groups.values():
        ran = [r for r in runs if "na" not in r]
        if not ran:
            cells.append(dict(runs[0], runs=len(runs)))
            continue
        cell = dict(ran[0])
        bad = [r["outcome"] for r in ran if r.get("outcome", "ok") != "ok"]
        if bad:
            cell["outcome"] = bad[0]
        keys = {k for r in ran for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for k in keys:
            vals = [r[k] for r in ran if isinstance(r.get(k), (int, float))]
            if vals:
                cell[k] = median(vals)
                if k in RANGED and len(vals) > 1:
                    cell[k + "_range"] = (min(vals), max(vals))
        cell["runs"] = len(ran)
        cells.append(cell)
    return cells


def find(results, system, scenario, mode):
    for r in results:
        if r["system"] == system and r["scenario"] == scenario and r["mode"] == mode:
            return r
    return None


def cell(r, field, kind):
    """The value and its text; a missing run says why."""
    if r is None:
        return None, "not run"
    if "na" in r:
        return None, r["na"]
    if isinstance(field, tuple):
        vals = [r.get(f) for f in field]
        return vals[0], " / ".join(fmt(v, kind) for v in vals)
    v = r.get(field)
    text = fmt(v, kind)
    spread = r.get(f"{field}_range")
    if v is not None and spread:
        text += f" ({fmt(spread[0], kind)}–{fmt(spread[1], kind)})"
    if v is not None and r.get("outcome", "ok") != "ok":
        text += " (!)"
    if field == "throughput" and r.get("steady_short"):
        text += " (short)"
    return v, text


def esc(s):
    return str(s).replace("|", "\\|")


def backlog_text(meta):
    """The feeder's backlog as the conditions give it: one number, or each side's per workload
    (upper / word count) when they differ."""
    fs = meta.get("files_settings")
    if not fs:
        return f"{meta['backlog']:,}"
    values = {v["backlog"] for w in fs.values() for v in w.values()}
    if len(values) == 1:
        return f"{values.pop():,}"
    return "; ".join(f"{sys}: " + " / ".join(f"{w[k]['backlog']:,}" for k in ("upper", "wordcount"))
                     for sys, w in fs.items()) + " (upper / word count)"


def partitions_text(meta):
    """sluice's files partitions: one number, or upper / word count when they differ."""
    fs = meta.get("files_settings")
    if not fs:
        return "2"
    a, b = fs["sluice"]["upper"]["partitions"], fs["sluice"]["wordcount"]["partitions"]
    return str(a) if a == b else f"{a} (upper) / {b} (word count)"


def write(path, meta, results, scenarios, systems):
    """Writes the Markdown report (and the chart beside it) and returns the Markdown. `results`
    are the runs, repeated ones included; the table shows each cell's median and range."""
    runs, results = results, aggregate(results)
    have_spark = "Spark" in systems
    cols = ["sluice", "Spark"]
    rows = []
    ran = {r["scenario"] for r in results}
    for sc in scenarios:
        if sc.key not in ran:
            continue
        rate = next((r.get("rate") for r in results
                     if r["scenario"] == sc.key and r["mode"] == "latency" and r.get("rate")), None)
        title = f"{sc.title} (Spark: {sc.spark_api})"
        for label, mode, field, kind in MEASURES:
            if mode == "latency" and rate and "fixed rate" in label:
                label = label.replace("fixed rate", f"{rate / 1e3:.0f} k lines/s")
            vals, texts = [], []
            for s in cols:
                v, t = cell(find(results, s, sc.key, mode), field, kind)
                vals.append(v)
                texts.append(t)
            comparable = not isinstance(field, tuple) or field[0] != "sched_p50_ms"
            rows.append([title, label, texts[0], texts[1],
                         ratio(vals[0], vals[1]) if comparable else NA])
            title = ""
        if sc.wal:
            base = next((b for b in scenarios if b.workload == sc.workload
                         and b.feeder == sc.feeder and not b.wal), None)
            for label, mode, field, kind in (
                    ("WAL cost: throughput change", "throughput", "throughput", "pct"),
                    ("WAL cost: p50 latency added, ms", "latency", "lat_p50_ms", "ms")):
                texts, vals = [], []
                for s in cols:
                    w = find(results, s, sc.key, mode)
                    b = find(results, s, base.key, mode) if base else None
                    wv = w.get(field) if w and "na" not in w else None
                    bv = b.get(field) if b and "na" not in b else None
                    if wv is None or bv is None:
                        texts.append(w["na"] if w and "na" in w else NA)
                        vals.append(None)
                    elif kind == "pct":
                        vals.append(wv / bv - 1)
                        texts.append(fmt((wv / bv - 1) * 100, "pct"))
                    else:
                        vals.append(wv - bv)
                        texts.append(fmt(wv - bv, "ms"))
                rows.append(["", label, texts[0], texts[1], NA])

    L = []
    title = "sluice against Spark" if have_spark else "sluice benchmark"
    L.append(f"# {title}: {meta['date']}{' (smoke)' if meta['smoke'] else ''}")
    L.append("")
    if meta["smoke"]:
        L.append("Smoke run (`bench/run --smoke`): a small corpus, a few seconds per run, sluice "
                 "only. The numbers show that the harness works, not how fast anything is.")
        L.append("")
    L.append("Ratio = sluice / Spark (throughput: above 1 means sluice is faster; latency, CPU, "
             "memory, start-up: below 1 means sluice is better). n/a: not measured (the reason is "
             "in the cell); (!): the run did not end cleanly (see the runs below); (short): fewer "
             "than four non-empty batches, so no batches were dropped.")
    L.append("")
    if have_spark:
        L.extend(lowest_first(results, scenarios))
    L.append("| workload | measure | sluice | Spark | sluice/Spark |")
    L.append("|---|---|---|---|---|")
    for r in rows:
        L.append("| " + " | ".join(esc(x) for x in r) + " |")
    L.append("")
    chart = os.path.splitext(path)[0] + ".png"
    made = chart_png(chart, results, scenarios)
    if made is True:
        L.append(f"![throughput and latency]({os.path.basename(chart)})")
    else:
        L.append(f"(No chart: {made}.)")
    L.append("")

    L.append("## Conditions")
    L.append("")
    la, lb = meta["load_start"], meta["load_end"]
    loads = [r["load_before"][0] for r in results if "load_before" in r] + \
            [r["load_after"][0] for r in results if "load_after" in r]
    L.append(f"- Machine: {meta['machine']}; {meta['cpu_model']}; {meta['mem_gib']:.0f} GiB.")
    L.append(f"- Load average (1/5/15 min) at start {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}, at end "
             f"{lb[0]:.2f} / {lb[1]:.2f} / {lb[2]:.2f}; 1-min load around the runs "
             + (f"{min(loads):.2f} to {max(loads):.2f}, mean {sum(loads) / len(loads):.2f}"
                if loads else "n/a")
             + ". The machine is shared: a load above what the benchmark itself puts on it means "
               "other work ran at the same time.")
    L.append(f"- Elapsed: {meta['elapsed_s'] / 60:.1f} min. Checkout: {meta['git']}.")
    rep = meta.get("repeat") or 1
    if rep > 1:
        L.append(f"- Each cell ran {rep} times, the systems' order alternating from one repeat "
                 f"to the next; the tables show the median, with the range (min–max) beside "
                 f"throughput, latency, CPU and start-up.")
    c = meta["corpus"]
    L.append(f"- Corpus: {c['lines']:,} lines of {c['words_per_line']} words from a "
             f"{c['vocabulary']:,}-word vocabulary (seed {c['seed']}); every {c['marker_every']:,}th "
             f"line is a marker `#MARK <16-digit send time, epoch us>`. "
             + (f"Each run feeds {meta['passes']['throughput']} passes over the corpus at full "
                f"speed (throughput) or {meta['passes']['latency']} at a fixed rate (latency)."
                if meta.get("passes") else
             f"Each run feeds for "
             f"{meta['duration_s']:.0f} s after the system's first batch with records (passing "
             f"over the corpus as often as needed): full speed for throughput (TCP: flow control "
             f"paces the feeder; files: the feeder keeps {backlog_text(meta)} lines ahead of what "
             f"the system has taken), a fixed rate for latency, {meta['warmup_s']:.0f} s longer, "
             f"those first seconds not measured (start-up and the backlog it leaves)."))
    sl = meta["systems"].get("sluice")
    if sl:
        caps = sl["caps"]
        L.append(f"- sluice: `{sl['version']}`, binary {sl['binary']} built {sl['built']}; "
                 f"`--report`: {'yes' if caps.get('report') else 'no (batches read from the JSON log, no marker latency)'}; "
                 f"`latency-marker`: {'yes' if caps.get('latency-marker') else 'no'}; "
                 f"`wal`: {'yes' if caps.get('wal') else 'no'}. Pipeline: 1 s batches, default "
                 f"workers (cores) and memory budget; tcp source with `end-on-close`, files source "
                 f"with {partitions_text(meta)} partitions and the default poll interval; `count` sink.")
    sp = meta["systems"].get("Spark")
    if sp:
        L.append(f"- Spark {sp['version']} (pyspark wheel), {sp['java']}; `local[2]`, driver memory "
                 f"{sp['memory']} (at 1g a full-speed DStream run died of OutOfMemoryError), 1 s batches, `spark.ui.enabled=false`, "
                 f"`spark.sql.shuffle.partitions=2`, `SPARK_LOCAL_IP=127.0.0.1`. tcp: DStream "
                 f"`socketTextStream` (MEMORY_AND_DISK_SER, one receiver holding one of the two "
                 f"cores, `spark.streaming.backpressure.enabled=true`, `initialRate` 300,000/s); WAL: "
                 f"`spark.streaming.receiver.writeAheadLog.enable=true` and a checkpoint directory "
                 f"on local disk. files: Structured Streaming file source, maxFilesPerTrigger "
                 f"{sp['max_files']['upper']} (upper) / {sp['max_files']['wordcount']} (word count) "
                 f"files of 10,000 lines; word count per batch inside foreachBatch. Both jobs end in "
                 f"a counting output that finds the markers in the same job.")
    L.append("- Measures: throughput = records in the batches in steady state (the first two and "
             "the last non-empty batch dropped) over the time between the ends of the batch before "
             "them and the last of them; CPU likewise over the same window, from /proc samples of "
             "the process tree every 200 ms; peak RSS = the largest sum of the tree's resident "
             "sets; latency = commit (output done) time minus the marker's send time, of the "
             "markers sent after the warm-up; scheduling delay = batch due time to processing start "
             "(Structured Streaming has no batch queue: a batch whose predecessor overran was "
             "due at the first tick after its predecessor started; sluice runs a batch's blocks "
             "while it is open, so its scheduling delay is from the batch's close to the start of "
             "its closing work: the three are not the same quantity, so the table gives no ratio "
             "for it).")
    L.append("")

    L.append("## Runs")
    L.append("")
    L.append("| system | scenario | mode | rate, lines/s | fed, lines/s (feeder CPU-s) | "
             "batches (non-empty) | records in / fed | outcome | load 1 min before / after |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "na" in r:
            L.append(f"| {r['system']} | {r['scenario']} | {r['mode']} | {NA} | {NA} | {NA} | {NA} | "
                     f"{esc(r['na'])} | {NA} |")
            continue
        L.append(f"| {r['system']} | {r['scenario']} | {r['mode']} | "
                 f"{fmt(r.get('rate'), 'rate') if r.get('rate') else 'full speed'} | "
                 f"{fmt(r.get('fed_rate'), 'rate')} ({fmt(r.get('feeder_cpu_s'), 's')}) | "
                 f"{r['batches']} ({r['nonempty_batches']}) | {r['records_in']:,} / {r['fed_lines']:,} | "
                 f"{esc(r['outcome'])} | {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |")
    L.append("")
    L.append(f"Raw reports, logs and pipeline files: `{meta['rundir']}` (not committed).")
    L.append("")

    pb = meta.get("plugin_bench")
    if pb:
        L.append("## sluice plugin micro-benchmark")
        L.append("")
        L.append(f"`{pb['command']}` (exit {pb['exit']}):")
        L.append("")
        L.append("```")
        L.append(pb["output"])
        L.append("```")
        L.append("")
    md = "\n".join(L)
    with open(path, "w") as f:
        f.write(md)
    return md


def lowest_first(cells, scenarios):
    """The throughput ratio of every workload, lowest first: the row furthest from the goal
    leads."""
    rows = []
    for sc in scenarios:
        a = find(cells, "sluice", sc.key, "throughput")
        b = find(cells, "Spark", sc.key, "throughput")
        av = a.get("throughput") if a and "na" not in a else None
        bv = b.get("throughput") if b and "na" not in b else None
        if av is not None and bv:
            rows.append((av / bv, sc, av, bv))
    if not rows:
        return []
    out = ["Throughput, sluice/Spark, lowest first (medians of the repeated runs):", "",
           "| workload | sluice/Spark | sluice | Spark |", "|---|---|---|---|"]
    for r, sc, av, bv in sorted(rows, key=lambda x: x[0]):
        out.append(f"| {esc(sc.title)} | {r:.2f} | {fmt(av, 'rate')} | {fmt(bv, 'rate')} |")
    return out + [""]


def chart_png(path, results, scenarios):
    """Throughput and latency per scenario, both systems side by side. True, or why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed here (the full run installs it into the Spark venv)"
    keys = [sc for sc in scenarios if any(r["scenario"] == sc.key for r in results)]
    if not keys:
        return "no runs"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.38
    colors = {"sluice": "#1f77b4", "Spark": "#ff7f0e"}
    for j, system in enumerate(("sluice", "Spark")):
        xs = [i + (j - 0.5) * width for i in range(len(keys))]
        thr = []
        p50 = []
        p99 = []
        for sc in keys:
            t = find(results, system, sc.key, "throughput")
            lat = find(results, system, sc.key, "latency")
            thr.append((t or {}).get("throughput") or 0)
            p50.append((lat or {}).get("lat_p50_ms") or 0)
            p99.append((lat or {}).get("lat_p99_ms") or 0)
        ax1.bar(xs, [v / 1e6 for v in thr], width, label=system, color=colors[system])
        ax2.bar(xs, p50, width, label=f"{system} p50", color=colors[system])
        ax2.scatter(xs, [v if v else float("nan") for v in p99], marker="_", s=300,
                    color="black", zorder=3, label=f"p99" if j == 0 else None)
    labels = [sc.key for sc in keys]
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels)
        ax.legend()
    ax1.set_ylabel("million records/s")
    ax1.set_title("throughput (full speed, steady state)")
    ax2.set_ylabel("ms")
    ax2.set_title("marker latency at a fixed rate (bar p50, tick p99)")
    lat = [r for r in results if r.get("mode") == "latency"]
    p99s = [r["lat_p99_ms"] for r in lat if r.get("lat_p99_ms")]
    p50s = [r["lat_p50_ms"] for r in lat if r.get("lat_p50_ms")]
    if p99s and p50s and max(p99s) > 20 * min(p50s):
        ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def check_tables(md):
    """Fails when a table row has another number of cells than its header (CI runs this)."""
    cols = None
    for n, line in enumerate(md.splitlines(), 1):
        if not line.startswith("|"):
            cols = None
            continue
        cells = len(line.replace("\\|", "").strip().strip("|").split("|"))
        if cols is None:
            cols = cells
        elif cells != cols:
            raise SystemExit(f"report: line {n} has {cells} cells, its table {cols}: {line}")
