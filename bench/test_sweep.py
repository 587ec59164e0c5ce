"""Unit tests of the files settings and their sweep (bench/sweep.py): which value wins, the
order settings are swept in, the settings file as bench/run's defaults, and the command line
over it. `python3 -m unittest discover -s bench -p 'test_*.py'` (no Spark, no sluice)."""

import argparse
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import sweep  # noqa: E402


class Choose(unittest.TestCase):
    def test_a_value_replaces_the_current_one_only_when_faster_by_the_margin(self):
        self.assertEqual(sweep.choose([(2, 100.0), (4, 104.0)], 0.05), 2)
        self.assertEqual(sweep.choose([(2, 100.0), (4, 106.0), (8, 130.0)], 0.05), 8)
        # The fastest wins, not the last that beats the current one.
        self.assertEqual(sweep.choose([(2, 100.0), (4, 130.0), (8, 110.0)], 0.05), 4)
        # A failed run (None) never wins; a failed current one is beaten by any result.
        self.assertEqual(sweep.choose([(2, 100.0), (4, None)], 0.05), 2)
        self.assertEqual(sweep.choose([(2, None), (4, 10.0)], 0.05), 4)


class SweepSide(unittest.TestCase):
    def test_settings_are_swept_one_at_a_time_from_the_best_so_far(self):
        spark = argparse.Namespace(name="Spark")
        sc = next(s for s in bench.SCENARIOS if s.key == "a-files")
        cfg = argparse.Namespace(margin=0.05)
        seen = []

        def run(settings):
            seen.append(dict(settings))
            # Faster with more files per trigger, as long as the backlog holds them.
            return min(settings["max_files"] * 10_000, settings["backlog"]) / 1.0

        best, rows = sweep.sweep_side(cfg, spark, sc, {"backlog": 8_000_000, "max_files": 100}, run)
        self.assertEqual(best, {"backlog": 8_000_000, "max_files": 800})
        # Every setting tried once: 3 maxFilesPerTrigger values, then the other backlogs (32 M
        # is no faster here, so 8 M stays).
        self.assertEqual([r["max_files"] for r in seen], [100, 400, 800, 800, 800])
        self.assertEqual([r["backlog"] for r in seen[-2:]], [2_000_000, 32_000_000])
        self.assertEqual(len(rows), len(seen))


class Settings(unittest.TestCase):
    def args(self, **kw):
        base = dict(backlog=None, spark_max_files_upper=None, spark_max_files_wordcount=None,
                    sluice_files_partitions=None)
        base.update(kw)
        return argparse.Namespace(**base)

    def test_the_settings_file_overlays_the_fallback_per_side_and_workload(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "settings.json")
            with open(path, "w") as f:
                json.dump({"files": {"Spark": {"upper": {"max_files": 400}}}}, f)
            got = bench.load_files_settings(path)
            self.assertEqual(got["Spark"]["upper"], {"backlog": 2_000_000, "max_files": 400})
            self.assertEqual(got["Spark"]["wordcount"]["max_files"], 30)
            self.assertEqual(bench.load_files_settings(os.path.join(d, "none.json")),
                             bench.FALLBACK_FILES_SETTINGS)

    def test_the_command_line_wins_over_the_settings_file(self):
        got = bench.files_settings_from_args(self.args(backlog=5, spark_max_files_wordcount=7,
                                                       sluice_files_partitions=3))
        self.assertEqual({v["backlog"] for w in got.values() for v in w.values()}, {5})
        self.assertEqual(got["Spark"]["wordcount"]["max_files"], 7)
        self.assertEqual({v["partitions"] for v in got["sluice"].values()}, {3})

    def test_the_committed_settings_name_every_side_and_workload(self):
        got = bench.load_files_settings()
        for system, keys in (("sluice", {"backlog", "partitions"}),
                             ("Spark", {"backlog", "max_files"})):
            for workload in ("upper", "wordcount"):
                self.assertEqual(set(got[system][workload]), keys, (system, workload))

    def test_sluice_pipelines_take_their_partitions_from_the_settings(self):
        cfg = argparse.Namespace(plugins="p", files=bench.load_files_settings())
        cfg.files["sluice"]["wordcount"]["partitions"] = 3
        s = bench.Sluice.__new__(bench.Sluice)
        s.cfg, s.caps = cfg, {}
        sc = next(x for x in bench.SCENARIOS if x.key == "b-files")
        self.assertIn("partitions = 3", s.pipeline(sc, "/tmp/r", indir="/tmp/in"))


if __name__ == "__main__":
    unittest.main()
