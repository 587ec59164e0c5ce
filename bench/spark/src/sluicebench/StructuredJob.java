package sluicebench;

import static org.apache.spark.sql.functions.array;
import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.collect_list;
import static org.apache.spark.sql.functions.count;
import static org.apache.spark.sql.functions.explode;
import static org.apache.spark.sql.functions.expr;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.split;
import static org.apache.spark.sql.functions.upper;
import static org.apache.spark.sql.functions.when;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.streaming.StreamingQuery;
import org.apache.spark.sql.streaming.StreamingQueryListener;
import org.apache.spark.sql.streaming.StreamingQueryProgress;
import org.apache.spark.sql.streaming.Trigger;

/**
 * The Structured Streaming side: the file source (`maxFilesPerTrigger`; the socket source cannot
 * take the volume) into workload `upper` (upper(value) in the query, then a count) or
 * `wordcount` (per batch, inside foreachBatch: explode(split) and groupBy; a streaming
 * aggregation would keep running totals instead). The output counts rows and finds markers
 * in one job.
 *
 * <pre>
 * spark-submit --master local[2] --class sluicebench.StructuredJob sluice-bench.jar \
 *   --workload upper|wordcount --dir IN --checkpoint DIR --report FILE [--expect N]
 *   [--max-files 100] [--batch-ms 1000] [--ready FILE] [--stop-file FILE] [--timeout-s 900]
 * </pre>
 */
public final class StructuredJob {
    private static final Map<Long, Common.Output> OUTPUTS = new ConcurrentHashMap<>();

    private StructuredJob() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv);
        String workload = Common.need(a, "workload");
        long batchMs = Long.parseLong(a.getOrDefault("batch-ms", "1000"));
        SparkSession spark = SparkSession.builder()
            .appName("sluice-bench-structured-" + workload)
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate();
        spark.sparkContext().setLogLevel(a.getOrDefault("log-level", "WARN"));
        Common.Report report = new Common.Report(a);
        spark.streams().addListener(new Listener(report, a, batchMs));

        Dataset<Row> lines = spark.readStream()
            .format("text")
            .option("maxFilesPerTrigger", a.getOrDefault("max-files", "100"))
            .load(Common.need(a, "dir"));
        Dataset<Row> stream;
        switch (workload) {
            case "upper":
                stream = lines.select(upper(col("value")).as("value"));
                break;
            case "wordcount":
                stream = lines;
                break;
            default:
                throw new IllegalArgumentException("unknown workload " + workload);
        }
        StreamingQuery query = stream.writeStream()
            .option("checkpointLocation", Common.need(a, "checkpoint"))
            .trigger(Trigger.ProcessingTime(batchMs))
            .foreachBatch((Dataset<Row> df, Long id) -> {
                Dataset<Row> out = workload.equals("wordcount") ? wordcount(df) : df;
                OUTPUTS.put(id, output(out, out.columns()[0]));
            })
            .start();
        System.err.println("sluice-bench: " + report.await(a) + "; stopping");
        query.stop();
        report.close();
        spark.stop();
    }

    /** Words per batch; a marker line stays whole, so its stamp survives. */
    private static Dataset<Row> wordcount(Dataset<Row> lines) {
        Column value = col("value");
        Column words = when(value.startsWith(Common.MARKER), array(value))
            .otherwise(split(value, " "));
        return lines.select(explode(words).as("word"))
            .where(col("word").notEqual(""))
            .groupBy("word")
            .count();
    }

    /** The counting output: rows and marker stamps in one job, latencies taken when it ends. */
    private static Common.Output output(Dataset<Row> df, String column) {
        Column c = col(column);
        Column stamp = when(c.startsWith(Common.MARKER),
            expr("cast(trim(substring(" + column + ", " + (Common.MARKER.length() + 1) + ")) as long)"));
        Row r = df.agg(count(lit(1)), collect_list(stamp)).first();
        List<Long> stamps = r.getList(1);
        long[] part = new long[1 + stamps.size()];
        part[0] = r.getLong(0);
        for (int i = 0; i < stamps.size(); i++) {
            part[i + 1] = stamps.get(i);
        }
        List<long[]> parts = new ArrayList<>(1);
        parts.add(part);
        return Common.Output.of(parts);
    }

    /** Writes a report line for every batch that ran (the idle progress events have no output). */
    private static final class Listener extends StreamingQueryListener {
        private final Common.Report report;
        private final Map<String, String> args;
        private final long batchMs;
        private long previousStart = -1;
        private long previousEnd = -1;

        Listener(Common.Report report, Map<String, String> args, long batchMs) {
            this.report = report;
            this.args = args;
            this.batchMs = batchMs;
        }

        @Override
        public void onQueryStarted(QueryStartedEvent e) {
            Common.ready(args);
        }

        @Override
        public void onQueryProgress(QueryProgressEvent e) {
            StreamingQueryProgress p = e.progress();
            Common.Output out = OUTPUTS.remove(p.batchId());
            if (out == null) {
                return;
            }
            long start = Instant.parse(p.timestamp()).toEpochMilli();
            long processing = p.durationMs().getOrDefault("triggerExecution", 0L);
            // The trigger fires on multiples of the interval. A batch whose predecessor overran
            // the next tick was due at that tick and started when the predecessor ended;
            // otherwise it started on its own tick.
            long nextTick = (previousStart / batchMs + 1) * batchMs;
            long due = previousStart >= 0 && previousEnd > nextTick
                ? nextTick
                : start / batchMs * batchMs;
            previousStart = start;
            previousEnd = start + processing;
            long sched = Math.max(0, start - due);
            report.batch(p.batchId(), due, start + processing, p.numInputRows(), out,
                processing, sched, start + processing - due);
        }

        @Override
        public void onQueryTerminated(QueryTerminatedEvent e) {}
    }
}
