"""The benchmark corpus: deterministic lines of words, with a latency marker line at a fixed
interval.

Every line is WORDS_PER_LINE words drawn from a VOCABULARY-word vocabulary by a seeded
generator, so the same (lines, seed) always gives the same bytes. Line i with
i % MARKER_EVERY == 0 is a marker instead: `#MARK ` and a 16-digit placeholder that the
feeder overwrites with the epoch microseconds at which it sends (or writes) that line.

    python3 corpus.py OUT [--lines 2000000] [--seed 42]
"""

import argparse
import os
import random
import sys

VOCABULARY = 1000
WORDS_PER_LINE = 10
MARKER_EVERY = 10_000
MARKER_PREFIX = b"#MARK "
STAMP_WIDTH = 16
MARKER_LINE = MARKER_PREFIX + b"0" * STAMP_WIDTH


def vocabulary(seed):
    """VOCABULARY distinct lower-case words of 3 to 9 letters."""
    rng = random.Random(seed)
    words = []
    seen = set()
    while len(words) < VOCABULARY:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return [w.encode() for w in words]


def generate(path, lines, seed):
    """Writes the corpus to `path` (through a temporary name, so a half-written corpus is never
    taken for a finished one)."""
    words = vocabulary(seed)
    rng = random.Random(seed + 1)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        done = 0
        while done < lines:
            n = min(MARKER_EVERY, lines - done)
            picks = rng.choices(words, k=n * WORDS_PER_LINE)
            out = []
            for j in range(n):
                if (done + j) % MARKER_EVERY == 0:
                    out.append(MARKER_LINE)
                else:
                    out.append(b" ".join(picks[j * WORDS_PER_LINE:(j + 1) * WORDS_PER_LINE]))
            f.write(b"\n".join(out) + b"\n")
            done += n
    os.replace(tmp, path)


def ensure(cache_dir, lines, seed):
    """The corpus file for (lines, seed), generated once and cached in `cache_dir`."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"corpus-{lines}-s{seed}.txt")
    if not os.path.exists(path):
        print(f"corpus: generating {lines:,} lines (seed {seed}) into {path}", file=sys.stderr)
        generate(path, lines, seed)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--lines", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    generate(a.out, a.lines, a.seed)


if __name__ == "__main__":
    main()
