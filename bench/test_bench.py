"""Unit tests of the harness's pure parts: the corpus, the feeder's stamping and slicing, the
measures and the report's tables. `python3 -m unittest discover bench` (no Spark, no sluice)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import corpus  # noqa: E402
import feeder  # noqa: E402
import report  # noqa: E402


class Monitor:
    """A TreeMonitor stand-in: CPU grows by one second per second from t = 0."""

    def cpu_at(self, t):
        return t

    def peak_rss(self):
        return 2**20

    def total_cpu(self):
        return 9.0


def batch(i, records, latencies=()):
    return {"batch": i, "time_ms": i * 1000, "done_ms": i * 1000 + 500, "records_in": records,
            "records_out": records, "processing_ms": 400, "scheduling_delay_ms": 1,
            "total_delay_ms": 500, "marker_latency_ms": list(latencies)}


class CorpusAndFeeder(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "c.txt")
        corpus.generate(self.path, 25_000, seed=7)

    def tearDown(self):
        self.dir.cleanup()

    def test_the_same_seed_gives_the_same_corpus(self):
        again = os.path.join(self.dir.name, "d.txt")
        corpus.generate(again, 25_000, seed=7)
        with open(self.path, "rb") as a, open(again, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_every_ten_thousandth_line_is_a_marker_and_the_others_have_ten_words(self):
        with open(self.path, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 25_000)
        for i, line in enumerate(lines):
            if i % corpus.MARKER_EVERY == 0:
                self.assertEqual(line, corpus.MARKER_LINE)
            else:
                self.assertEqual(len(line.split(b" ")), corpus.WORDS_PER_LINE)

    def test_the_feeder_finds_every_marker_and_stamps_it_in_place(self):
        data, stamps, segments = feeder.load(self.path)
        self.assertEqual(len(stamps), 3)
        self.assertEqual(len(segments), 3)
        size = len(data)
        feeder.stamp(data, stamps, 0, len(data))
        self.assertEqual(len(data), size)
        for off in stamps:
            digits = bytes(data[off:off + feeder.STAMP_WIDTH])
            self.assertTrue(digits.isdigit())
            self.assertGreater(int(digits), 1_600_000_000_000_000)

    def test_paced_pieces_cover_the_corpus_at_line_ends(self):
        data, _, segments = feeder.load(self.path)
        pieces = feeder.plan(data, segments, rate=1000)
        self.assertEqual(sum(p[2] for p in pieces), 25_000)
        pos = 0
        for s, e, _, _ in pieces:
            self.assertEqual(s, pos)
            self.assertEqual(data[e - 1:e], b"\n")
            pos = e
        self.assertEqual(pos, len(data))

    def test_the_feeder_reads_what_a_report_says_was_taken(self):
        rep = os.path.join(self.dir.name, "r.jsonl")
        taken = feeder.Consumed(rep)
        self.assertEqual(taken.get(), 0)
        self.assertIsNone(taken.started())
        with open(rep, "w") as f:
            f.write(json.dumps(batch(0, 5)) + "\n" + json.dumps(batch(1, 7))[:10])
        self.assertEqual(taken.get(), 5)
        with open(rep, "a") as f:
            f.write(json.dumps(batch(1, 7))[10:] + "\n")
        self.assertEqual(taken.get(), 12)
        self.assertIsNotNone(taken.started())
        taken.f.close()


    def test_a_feeder_that_keeps_listening_feeds_the_client_after_a_killed_one(self):
        import socket
        import subprocess
        f = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "feeder.py"),
                              "tcp", "--corpus", self.path, "--rate", "100000", "--duration", "30",
                              "--keep-listening", "--accept-timeout", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(f.stdout.readline().split()[1])
            for _ in range(2):  # the first client goes away mid-feed, as a killed system does
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    got = b""
                    while got.count(b"\n") < 100:
                        got += c.recv(65536)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                self.assertTrue(got.startswith(b"#MARK "), got[:40])
        finally:
            f.kill()
            f.wait()

    def test_linked_files_hold_the_corpus_once_per_pass_and_appear_whole(self):
        import subprocess
        out = os.path.join(self.dir.name, "in")
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "feeder.py"),
                            "files", "--corpus", self.path, "--passes", "2", "--link",
                            "--dir", out, "--tmp-dir", os.path.join(self.dir.name, "tmp")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        names = sorted(os.listdir(out))
        self.assertEqual(len(names), 6, names)  # 25,000 lines: 3 segments, 2 passes
        with open(self.path, "rb") as f:
            corpus_lines = f.read().count(b"\n")
        lines = 0
        for n in names:
            with open(os.path.join(out, n), "rb") as f:
                body = f.read()
            self.assertTrue(body.startswith(b"#MARK ") and body.endswith(b"\n"), n)
            lines += body.count(b"\n")
        self.assertEqual(lines, 2 * corpus_lines)
        # A pass's files are links to the files of the first: one write per segment.
        self.assertEqual(os.stat(os.path.join(out, names[0])).st_ino,
                         os.stat(os.path.join(out, names[3])).st_ino)
        self.assertEqual(json.loads(r.stdout.splitlines()[-1])["lines"], 2 * corpus_lines)


class Measures(unittest.TestCase):
    def test_throughput_drops_the_first_two_and_the_last_non_empty_batch(self):
        batches = [batch(0, 0)] + [batch(i, 1000 * i) for i in range(1, 7)]
        m = bench.summarize(batches, Monitor(), launch_ms=0, fed_lines=21_000,
                            mode="throughput", warmup_s=0)
        # non-empty 1..6; steady 3..5; from the end of batch 2 to the end of batch 5: 3 s
        self.assertEqual(m["steady_batches"], 3)
        self.assertAlmostEqual(m["throughput"], (3000 + 4000 + 5000) / 3)
        self.assertAlmostEqual(m["cpu_s_per_m"], 3 / 12_000 * 1e6)
        self.assertAlmostEqual(m["first_batch_s"], 1.5, msg="batch 1: the first with records")

    def test_the_first_batch_is_the_first_with_records(self):
        m = bench.summarize([batch(1, 0), batch(2, 0), batch(3, 10)], Monitor(), 0, 10,
                            "throughput", 0)
        self.assertEqual(m["first_batch_s"], 3.5)

    def test_latency_keeps_only_markers_sent_after_the_warmup(self):
        # first non-empty batch ends at 1.5 s; warm-up 1.5 s: markers sent from 3 s on count.
        # Sent = commit - latency: 1.4 s, 2.6 s (out); 3.4 s, 5.3 s (in)
        batches = [batch(1, 10, [100.0]), batch(3, 10, [900.0, 100.0]), batch(5, 10, [200.0])]
        m = bench.summarize(batches, Monitor(), 0, 30, "latency", warmup_s=1.5)
        self.assertEqual(m["markers"], 2)
        self.assertEqual(m["lat_max_ms"], 200.0)

    def test_few_batches_are_measured_whole_and_said_to_be_short(self):
        m = bench.summarize([batch(1, 10), batch(2, 20)], Monitor(), 0, 30, "throughput", 0)
        self.assertTrue(m["steady_short"])
        self.assertAlmostEqual(m["throughput"], 20.0)

    def test_a_latency_rate_is_half_the_lower_clean_throughput_rounded_down(self):
        a, c = bench.SCENARIOS[0], bench.SCENARIOS[4]
        results = [
            {"scenario": a.key, "mode": "throughput", "throughput": 729_000, "outcome": "ok"},
            {"scenario": a.key, "mode": "throughput", "throughput": 7_100_000, "outcome": "ok"},
            {"scenario": a.key, "mode": "throughput", "throughput": 10, "outcome": "exit 1"},
        ]
        self.assertEqual(bench.latency_rate(results, a), 360_000)
        results.append({"scenario": a.key, "mode": "latency", "rate": 360_000})
        self.assertEqual(bench.latency_rate(results, c), 360_000)


class Report(unittest.TestCase):
    def test_a_report_with_missing_runs_has_well_formed_tables(self):
        results = [
            bench.summarize([batch(i, 1000) for i in range(1, 8)], Monitor(), 0, 7000,
                            "throughput", 0) | {"system": "sluice", "scenario": "a-tcp",
                                                "outcome": "ok", "load_before": (1, 1, 1),
                                                "load_after": (1, 1, 1)},
            {"system": "sluice", "scenario": "c-a-tcp", "mode": "throughput", "na": "n/a (no WAL yet)"},
        ]
        meta = {"date": "d", "smoke": True, "elapsed_s": 1, "load_start": (1, 1, 1),
                "load_end": (1, 1, 1), "machine": "m", "cpu_model": "c", "mem_gib": 1,
                "git": "g", "corpus": {"lines": 1, "seed": 1, "vocabulary": 1,
                                       "words_per_line": 1, "marker_every": 1},
                "duration_s": 1, "warmup_s": 0, "backlog": 1, "passes": None,
                "systems": {}, "rundir": "r"}
        with tempfile.TemporaryDirectory() as d:
            md = report.write(os.path.join(d, "r.md"), meta, results, bench.SCENARIOS, ["sluice"])
        report.check_tables(md)
        self.assertIn("n/a (no WAL yet)", md)
        self.assertIn("| sluice/Spark |", md)

    def test_repeated_runs_show_their_median_and_range_and_the_lowest_ratio_leads(self):
        def run(system, sc, thr):
            return {"system": system, "scenario": sc, "mode": "throughput", "throughput": thr,
                    "outcome": "ok", "batches": 5, "nonempty_batches": 5, "records_in": 1,
                    "fed_lines": 1, "load_before": [0, 0, 0], "load_after": [0, 0, 0]}
        results = [run("sluice", "a-tcp", t) for t in (9e6, 10e6, 12e6)] + \
                  [run("Spark", "a-tcp", t) for t in (1e6, 1e6, 1e6)] + \
                  [run("sluice", "b-tcp", t) for t in (3e6, 4e6)] + [run("Spark", "b-tcp", 1e6)]
        cells = report.aggregate(results)
        a = report.find(cells, "sluice", "a-tcp", "throughput")
        self.assertEqual((a["throughput"], a["throughput_range"], a["runs"]), (10e6, (9e6, 12e6), 3))
        self.assertEqual(report.find(cells, "sluice", "b-tcp", "throughput")["throughput"], 3.5e6)
        meta = {"date": "2026-12-05T00:00:00", "smoke": False, "load_start": [0, 0, 0],
                "load_end": [0, 0, 0], "machine": "m", "cpu_model": "c", "mem_gib": 1,
                "elapsed_s": 1, "git": "g", "repeat": 3, "duration_s": 1, "warmup_s": 0,
                "backlog": 1, "rundir": "r", "systems": {},
                "corpus": {"lines": 1, "words_per_line": 1, "vocabulary": 1, "seed": 1,
                           "marker_every": 1}}
        with tempfile.TemporaryDirectory() as d:
            md = report.write(os.path.join(d, "r.md"), meta, results, bench.SCENARIOS,
                              ["sluice", "Spark"])
        report.check_tables(md)
        self.assertIn("10.00 M (9.00 M–12.00 M)", md)
        lead = md[md.index("lowest first"):]
        self.assertLess(lead.index("(b) word count, tcp"), lead.index("(a) upper-case + count, tcp"))

    def test_a_malformed_table_is_refused(self):
        with self.assertRaises(SystemExit):
            report.check_tables("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n")


class Honesty(unittest.TestCase):
    def test_a_sluice_that_only_fails_fails_the_benchmark(self):
        """A fake `sluice` that prints an error and exits 1: the smoke run still writes its
        table, and exits non-zero naming what failed (it once exited 0 with a tidy table)."""
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "release"))
            os.makedirs(os.path.join(d, "plugins"))
            fake = os.path.join(d, "release", "sluice")
            with open(fake, "w") as f:
                f.write("#!/bin/sh\necho 'fake sluice fails' >&2\nexit 1\n")
            os.chmod(fake, 0o755)
            env = dict(os.environ, CARGO_TARGET_DIR=d, SLUICE_PLUGINS=os.path.join(d, "plugins"))
            out = os.path.join(d, "r.md")
            r = subprocess.run([sys.executable, bench.__file__, "--smoke", "--scenarios", "a-tcp",
                                "--modes", "throughput", "--work", os.path.join(d, "work"),
                                "--lines", "20000", "--out", out],
                               env=env, capture_output=True, text=True, timeout=240)
            self.assertNotEqual(r.returncode, 0, r.stderr[-2000:])
            self.assertIn("FAILED: sluice a-tcp throughput", r.stderr)
            self.assertTrue(os.path.exists(out), "the table is still written")

    def test_an_earlier_results_file_is_never_overwritten(self):
        with tempfile.TemporaryDirectory() as d:
            first = os.path.join(d, "2026-12-05.md")
            self.assertEqual(bench.unused_path(first), first)
            open(first, "w").close()
            second = bench.unused_path(first)
            self.assertEqual(second, os.path.join(d, "2026-12-05-2.md"))
            open(second, "w").close()
            open(os.path.join(d, "2026-12-05-3.png"), "w").close()
            self.assertEqual(bench.unused_path(first), os.path.join(d, "2026-12-05-4.md"))

    def test_two_runs_started_in_the_same_second_get_their_own_directories(self):
        with tempfile.TemporaryDirectory() as d:
            stamp = os.path.join(d, "2026-12-05-123000")
            first, second = bench.unique_dir(stamp), bench.unique_dir(stamp)
            self.assertEqual(first, stamp)
            self.assertEqual(second, stamp + "-2")
            self.assertTrue(os.path.isdir(first) and os.path.isdir(second))


if __name__ == "__main__":
    unittest.main()
