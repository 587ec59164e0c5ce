"""The judge of sluice's /metrics (tests/it/metrics.rs): the Prometheus project's own Python
client parses the exposition with its text-format parser, and what it read is printed as JSON
for the Rust test to compare with the run's report.

Usage: python metrics.py < exposition.txt

The parser (prometheus_client.parser.text_string_to_metric_families) raises on a line it
cannot read. It is laxer than the Prometheus server's, so the rules of the text format it does
not enforce are checked here after it, on what it returned:
  - a family (its # TYPE name) appears once, with one TYPE line, and all its samples together;
  - a sample's labels are unique within its family;
  - a histogram has, per label set, buckets with ascending `le` ending in +Inf, cumulative
    counts that never go down, a +Inf bucket equal to `_count`, and a `_sum`.
Any breach exits with status 1 and the reason on stderr.

The output: {"families": [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}],
"types": {declared name: type}} where `name` is the parser's family name (a counter's without
`_total`, as the parser reports it) and `types` are the names exactly as the # TYPE lines
declare them.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print(f"metrics.py: {message}", file=sys.stderr)
    sys.exit(1)


def declared_types(text):
    """The `# TYPE name type` lines, in order; a name declared twice is a breach."""
    types = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "#" and parts[1] == "TYPE":
            if parts[2] in types:
                fail(f"second TYPE line for {parts[2]}")
            types[parts[2]] = parts[3]
    return types


def check_histogram(family):
    series = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        key = json.dumps(labels, sort_keys=True)
        entry = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if s.name == family.name + "_bucket":
            if "le" not in s.labels:
                fail(f"{s.name}{s.labels}: a bucket without `le`")
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name == family.name + "_count":
            entry["count"] = s.value
        elif s.name == family.name + "_sum":
            entry["sum"] = s.value
    for key, e in series.items():
        where = f"histogram {family.name} {key}"
        bounds = [b for b, _ in e["buckets"]]
        counts = [c for _, c in e["buckets"]]
        if not bounds or not math.isinf(bounds[-1]):
            fail(f"{where}: no +Inf bucket last: {bounds}")
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            fail(f"{where}: `le` not strictly ascending: {bounds}")
        if any(b < a for a, b in zip(counts, counts[1:])):
            fail(f"{where}: bucket counts go down: {counts}")
        if e["count"] is None or e["sum"] is None:
            fail(f"{where}: no _count or no _sum")
        if counts[-1] != e["count"]:
            fail(f"{where}: +Inf bucket {counts[-1]} != _count {e['count']}")


def main():
    text = sys.stdin.read()
    types = declared_types(text)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError (and others) on what it cannot read
        fail(f"the parser refused the exposition: {type(e).__name__}: {e}")
    seen = set()
    out = []
    for f in families:
        if f.name in seen:
            fail(f"family {f.name} appears twice (its samples are not together)")
        seen.add(f.name)
        if f.type == "untyped":
            fail(f"{f.name}: a sample without a TYPE line of its own family: {f.samples[:1]}")
        labels_seen = set()
        for s in f.samples:
            key = (s.name, json.dumps(s.labels, sort_keys=True))
            if key in labels_seen:
                fail(f"duplicate sample {s.name}{s.labels}")
            labels_seen.add(key)
        if f.type == "histogram":
            check_histogram(f)
        out.append({
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples
            ],
        })
    json.dump({"families": out, "types": types}, sys.stdout)


if __name__ == "__main__":
    main()
