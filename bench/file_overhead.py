"""The files source's cost per file (issue #16), in one run: sluice reads directories of
small files with `once = true` (read what is there, then end), and the cost of a file is the
difference in run time between many files and a few, over the difference in their number,
for files of one line and of 1,000 lines (about 60 bytes a line). The lines' own cost is the
1,000-line files' per-file cost less the one-line files'.

    python3 bench/file_overhead.py [--few 500] [--many 2500] [--repeat 3]

Needs sluice built (`$CARGO_TARGET_DIR/release/sluice`). Prints a Markdown table with the load
average; the runs (pipelines, reports, logs) stay under --work.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

LINE = b"alpha bravo charlie delta echo foxtrot golf hotel india juliet\n"  # 62 bytes


def make_dir(path, files, lines):
    """`files` files of `lines` lines each in `path`, written whole (as a writer renaming them
    into place would leave them)."""
    os.makedirs(path, exist_ok=True)
    body = LINE * lines
    for i in range(files):
        with open(os.path.join(path, f"f{i:06d}.txt"), "wb") as f:
            f.write(body)


def pipeline(run_dir, in_dir, plugins):
    text = f"""version = 1
name = "file-overhead"
plugins = "{plugins}"
batch-interval = "100ms"
block-interval = "50ms"

[source]
kind = "files"
path = "{in_dir}"
partitions = 2
once = true

[[sink]]
kind = "count"
"""
    path = os.path.join(run_dir, "pipeline.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def one_run(sluice, plugins, in_dir, work, expect):
    """Seconds from launch to exit of a `once` run over `in_dir`, and the CPU seconds it used
    (user + system); checks every line came."""
    run_dir = tempfile.mkdtemp(dir=work)
    report = os.path.join(run_dir, "report.jsonl")
    cmd = [sluice, "run", pipeline(run_dir, in_dir, plugins), "--report", report]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        sys.exit(f"file_overhead: sluice exited {r.returncode}: {r.stderr[-2000:]}")
    with open(report) as f:
        got = sum(json.loads(line)["records_in"] for line in f if line.strip())
    if got != expect:
        sys.exit(f"file_overhead: {got} records, not {expect} ({in_dir})")
    shutil.rmtree(run_dir, ignore_errors=True)
    return took, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--few", type=int, default=500)
    ap.add_argument("--many", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the fastest counts")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/sluice/bench/file-overhead"))
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/sluice/target")
    sluice = os.path.join(target, "release", "sluice")
    plugins = os.environ.get("SLUICE_PLUGINS") or os.path.join(target, "sluice-plugins", "plugins")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    cells = [(lines, files) for lines in (1, 1000) for files in (a.few, a.many)]
    dirs = {}
    for lines, files in cells:
        dirs[(lines, files)] = os.path.join(a.work, f"in-{lines}x{files}")
        make_dir(dirs[(lines, files)], files, lines)
    load_before = os.getloadavg()
    times = {c: [] for c in cells}
    for _ in range(a.repeat):  # alternating, so load spikes spread over the cells
        for c in cells:
            times[c].append(one_run(sluice, plugins, dirs[c], a.work, c[0] * c[1]))
    load_after = os.getloadavg()
    best = {c: min(t[0] for t in ts) for c, ts in times.items()}
    cpu = {c: min(t[1] for t in ts) for c, ts in times.items()}
    per_file = {lines: (best[(lines, a.many)] - best[(lines, a.few)]) / (a.many - a.few)
                for lines in (1, 1000)}
    cpu_file = {lines: (cpu[(lines, a.many)] - cpu[(lines, a.few)]) / (a.many - a.few)
                for lines in (1, 1000)}
    out = ["| lines per file | run time (CPU), few files, s | run time (CPU), many files, s "
           "| per file: wall µs | per file: CPU µs |",
           "|---|---|---|---|---|"]
    for lines in (1, 1000):
        out.append(f"| {lines:,} | {best[(lines, a.few)]:.3f} ({cpu[(lines, a.few)]:.3f}), "
                   f"{a.few:,} files | {best[(lines, a.many)]:.3f} ({cpu[(lines, a.many)]:.3f}), "
                   f"{a.many:,} files | {per_file[lines] * 1e6:,.0f} | {cpu_file[lines] * 1e6:,.0f} |")
    lines_cost = (per_file[1000] - per_file[1]) / 999
    out += ["", f"Per line (the 1,000-line files' wall cost less the one-line files', over 999 "
            f"lines): {lines_cost * 1e9:,.0f} ns. Fastest (and least CPU) of {a.repeat} alternating runs per cell; "
            f"load average (1/5/15 min) before {' / '.join(f'{x:.2f}' for x in load_before)}, "
            f"after {' / '.join(f'{x:.2f}' for x in load_after)}."]
    print("\n".join(out))
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
