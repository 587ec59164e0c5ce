package sluicebench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.Time;
import org.apache.spark.streaming.api.java.JavaDStream;
import org.apache.spark.streaming.api.java.JavaPairDStream;
import org.apache.spark.streaming.api.java.JavaReceiverInputDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.scheduler.BatchInfo;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchCompleted;
import org.apache.spark.streaming.scheduler.StreamingListenerReceiverStarted;

import scala.Tuple2;

/**
 * The DStream side: `socketTextStream` (the feeder is the server) into workload `upper`
 * (upper-case each line, count lines) or `wordcount` (words per batch, reduceByKey), ending
 * in a counting output that also finds the marker lines. The data path stays in the JVM.
 *
 * <pre>
 * spark-submit --master local[2] --class sluicebench.DStreamJob sluice-bench.jar \
 *   --workload upper|wordcount --port P --report FILE [--expect N] [--batch-ms 1000]
 *   [--wal --checkpoint DIR] [--recover --checkpoint DIR] [--backpressure true] [--initial-rate 300000] [--ready FILE] [--stop-file FILE] [--timeout-s 900]
 * </pre>
 */
public final class DStreamJob {
    /** Outputs by batch time, from the output operation to the listener. */
    private static final Map<Long, Common.Output> OUTPUTS = new ConcurrentHashMap<>();

    /** Set when the context is built here rather than read from a checkpoint. */
    private static volatile boolean created;

    private DStreamJob() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv);
        // With --recover, a checkpoint directory left by a killed run brings the job back
        // (its graph, its pending batches and, with --wal, its received blocks), as a
        // restarted driver in cluster mode would; without one the job starts afresh.
        boolean recover = Boolean.parseBoolean(a.getOrDefault("recover", "false"));
        JavaStreamingContext ssc = recover
            ? JavaStreamingContext.getOrCreate(Common.need(a, "checkpoint"), () -> create(a))
            : create(a);
        if (recover) {
            System.err.println("sluice-bench: context " + (created ? "created afresh" : "restored from the checkpoint"));
        }
        ssc.sparkContext().setLogLevel(a.getOrDefault("log-level", "WARN"));
        // Listeners are not checkpointed: a recovered context gets its own here.
        Common.Report report = new Common.Report(a);
        ssc.addStreamingListener(new Listener(report, a));
        ssc.start();
        System.err.println("sluice-bench: " + report.await(a) + "; stopping");
        ssc.stop(true, false);
        report.close();
    }

    /** A new context with the workload's graph, checkpointed under --checkpoint if asked. */
    private static JavaStreamingContext create(Map<String, String> a) {
        created = true;
        String workload = Common.need(a, "workload");
        boolean wal = Boolean.parseBoolean(a.getOrDefault("wal", "false"));
        boolean recover = Boolean.parseBoolean(a.getOrDefault("recover", "false"));
        long batchMs = Long.parseLong(a.getOrDefault("batch-ms", "1000"));
        SparkConf conf = new SparkConf()
            .setAppName("sluice-bench-dstream-" + workload + (wal ? "-wal" : ""))
            .setIfMissing("spark.master", "local[2]")
            .set("spark.ui.enabled", "false")
            .set("spark.sql.shuffle.partitions", "2")
            .set("spark.streaming.receiver.writeAheadLog.enable", Boolean.toString(wal))
            // The receiver's rate follows what the batches can take, as sluice's memory budget
            // slows its receivers; without it a full-speed feed only piles up blocks.
            .set("spark.streaming.backpressure.enabled", a.getOrDefault("backpressure", "true"))
            // Until its first batch finishes the rate estimator has no estimate and the receiver
            // reads without limit: at full speed that filled a 1 g heap (OutOfMemoryError).
            .set("spark.streaming.backpressure.initialRate", a.getOrDefault("initial-rate", "300000"));
        JavaStreamingContext ssc = new JavaStreamingContext(conf, Durations.milliseconds(batchMs));
        if (wal || recover) {
            ssc.checkpoint(Common.need(a, "checkpoint"));
        }

        // With the WAL the data is already on disk: no in-memory replica (Spark's advice).
        JavaReceiverInputDStream<String> lines = ssc.socketTextStream(
            a.getOrDefault("host", "127.0.0.1"), Integer.parseInt(Common.need(a, "port")),
            StorageLevel.MEMORY_AND_DISK_SER());
        switch (workload) {
            case "upper": {
                JavaDStream<String> upper = lines.map(s -> s.toUpperCase(Locale.ROOT));
                upper.foreachRDD(DStreamJob::output);
                break;
            }
            case "wordcount": {
                JavaPairDStream<String, Long> counts = lines
                    .flatMapToPair(DStreamJob::words)
                    .reduceByKey(Long::sum);
                counts.foreachRDD((rdd, time) -> output(rdd.keys(), time));
                break;
            }
            default:
                throw new IllegalArgumentException("unknown workload " + workload);
        }
        return ssc;
    }

    /** Each word of a line as (word, 1); a marker line stays whole, so its stamp survives. */
    private static java.util.Iterator<Tuple2<String, Long>> words(String line) {
        if (line.startsWith(Common.MARKER)) {
            return List.of(new Tuple2<>(line, 1L)).iterator();
        }
        String[] w = line.split(" ");
        List<Tuple2<String, Long>> out = new ArrayList<>(w.length);
        for (String s : w) {
            if (!s.isEmpty()) {
                out.add(new Tuple2<>(s, 1L));
            }
        }
        return out.iterator();
    }

    /** The counting output: one job, records and marker stamps per partition. */
    private static void output(JavaRDD<String> rdd, Time time) {
        List<long[]> parts = rdd.mapPartitions(Common::summarize).collect();
        OUTPUTS.put(time.milliseconds(), Common.Output.of(parts));
    }

    /** Writes a report line when a batch completes. */
    private static final class Listener implements StreamingListener {
        private final Common.Report report;
        private final Map<String, String> args;
        private long batch;

        Listener(Common.Report report, Map<String, String> args) {
            this.report = report;
            this.args = args;
        }

        @Override
        public void onReceiverStarted(StreamingListenerReceiverStarted started) {
            Common.ready(args);
        }

        @Override
        public void onBatchCompleted(StreamingListenerBatchCompleted completed) {
            BatchInfo b = completed.batchInfo();
            long time = b.batchTime().milliseconds();
            long end = opt(b.processingEndTime(), System.currentTimeMillis());
            report.batch(batch++, time, end, b.numRecords(), OUTPUTS.remove(time),
                opt(b.processingDelay(), 0), opt(b.schedulingDelay(), 0), opt(b.totalDelay(), 0));
        }

        private static long opt(scala.Option<Object> o, long otherwise) {
            return o.isDefined() ? (Long) o.get() : otherwise;
        }
    }
}
