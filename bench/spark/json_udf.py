"""json-upper (examples/json-upper/SPEC.md) as a Spark Python UDF, for `sluice bench plugins
--lang`: the records of FILE are read and cached first, then the UDF is timed over all of them
(the rows it keeps and the rejects both counted) on a second pass, once its Python workers
run, as sluice's side times the plugin call path of a started plugin.

    python json_udf.py FILE        # prints: RESULT <spark version> <records> <seconds> <kept>
"""
import json
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _no_constants(name):
    raise ValueError(name)


def json_upper(value):
    """The output value, or "!" and the reason for a reject (so both are counted)."""
    try:
        obj = json.loads(value, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return "!not valid JSON"
    if not isinstance(obj, dict):
        return "!not a JSON object"
    user, item = obj.get("user"), obj.get("item")
    if not isinstance(user, str):
        return '!field "user" is missing or not a string'
    if not isinstance(item, str):
        return '!field "item" is missing or not a string'
    return '{"user":%s,"item":%s}' % (json.dumps(user.translate(UPPER), ensure_ascii=False),
                                      json.dumps(item, ensure_ascii=False))


def main():
    path = sys.argv[1]
    spark = (SparkSession.builder.master("local[2]").appName("json-upper-udf")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    # Bytes in, as sluice's plugins get them: invalid UTF-8 is replaced by Spark's text reader,
    # which is where the two sides differ (a few records of the corpus); the timing is what
    # counts here.
    lines = spark.read.option("lineSep", "\n").text(path).repartition(2).cache()
    records = lines.count()
    udf = F.udf(json_upper, StringType())
    out = lines.select(udf("value").alias("v"))
    kept = out.filter(~F.col("v").startswith("!")).count()
    # Timed on the second pass: the Python workers are started and reused by then
    # (spark.python.worker.reuse), as in a long-running streaming job.
    start = time.perf_counter()
    kept = out.filter(~F.col("v").startswith("!")).count()
    seconds = time.perf_counter() - start
    print(f"RESULT {spark.version} {records} {seconds:.3f} {kept}")
    spark.stop()


if __name__ == "__main__":
    main()
