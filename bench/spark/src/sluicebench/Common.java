package sluicebench;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * What both jobs share: their arguments, the marker format, the per-batch JSONL report (the same
 * format `sluice run --report` writes) and the rule that ends a run.
 */
final class Common {
    /** A marker line: this prefix, then the epoch microseconds at which the feeder sent it. */
    static final String MARKER = "#MARK ";

    private Common() {}

    /** `--key value` pairs; `--flag` alone means "true". */
    static Map<String, String> args(String[] argv) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument " + argv[i]);
            }
            String k = argv[i].substring(2);
            if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
                m.put(k, argv[++i]);
            } else {
                m.put(k, "true");
            }
        }
        return m;
    }

    static String need(Map<String, String> a, String key) {
        String v = a.get(key);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + key);
        }
        return v;
    }

    /** The stamp of a marker line, in epoch microseconds, or -1 when the line is no marker. */
    static long stamp(String line) {
        if (!line.startsWith(MARKER)) {
            return -1;
        }
        try {
            return Long.parseLong(line.substring(MARKER.length()).trim());
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /**
     * What a counting sink sees of one partition: the number of records, then the stamps of the
     * markers among them. Runs on the executors; one small array per partition comes back.
     */
    static Iterator<long[]> summarize(Iterator<String> records) {
        long n = 0;
        List<Long> stamps = new ArrayList<>();
        while (records.hasNext()) {
            String s = records.next();
            n++;
            long st = stamp(s);
            if (st >= 0) {
                stamps.add(st);
            }
        }
        long[] out = new long[1 + stamps.size()];
        out[0] = n;
        for (int i = 0; i < stamps.size(); i++) {
            out[i + 1] = stamps.get(i);
        }
        List<long[]> one = new ArrayList<>(1);
        one.add(out);
        return one.iterator();
    }

    /** The output of one batch, as the output operation saw it when it finished. */
    static final class Output {
        final long recordsOut;
        final double[] markerLatencyMs;

        Output(long recordsOut, double[] markerLatencyMs) {
            this.recordsOut = recordsOut;
            this.markerLatencyMs = markerLatencyMs;
        }

        /** The output of the partition summaries, with marker latencies taken now. */
        static Output of(List<long[]> parts) {
            long doneUs = System.currentTimeMillis() * 1000L;
            long n = 0;
            List<Double> lat = new ArrayList<>();
            for (long[] p : parts) {
                n += p[0];
                for (int i = 1; i < p.length; i++) {
                    lat.add((doneUs - p[i]) / 1000.0);
                }
            }
            double[] l = new double[lat.size()];
            for (int i = 0; i < l.length; i++) {
                l[i] = lat.get(i);
            }
            return new Output(n, l);
        }
    }

    /** The JSONL report, one line per finished batch, and the rule that ends the run. */
    static final class Report {
        private final BufferedWriter out;
        private final long expect;
        private final int idleBatches;
        private final CountDownLatch done = new CountDownLatch(1);
        private long total;
        private int idle;

        Report(Map<String, String> a) throws IOException {
            out = Files.newBufferedWriter(Paths.get(need(a, "report")), StandardCharsets.UTF_8);
            expect = Long.parseLong(a.getOrDefault("expect", "0"));
            idleBatches = Integer.parseInt(a.getOrDefault("idle-batches", "5"));
        }

        synchronized void batch(long batch, long timeMs, long doneMs, long in, Output o,
                                long processingMs, long schedulingDelayMs, long totalDelayMs) {
            StringBuilder b = new StringBuilder(256);
            b.append("{\"batch\":").append(batch)
                .append(",\"time_ms\":").append(timeMs)
                .append(",\"done_ms\":").append(doneMs)
                .append(",\"records_in\":").append(in)
                .append(",\"records_out\":").append(o == null ? 0 : o.recordsOut)
                .append(",\"processing_ms\":").append(processingMs)
                .append(",\"scheduling_delay_ms\":").append(schedulingDelayMs)
                .append(",\"total_delay_ms\":").append(totalDelayMs)
                .append(",\"marker_latency_ms\":[");
            if (o != null) {
                for (int i = 0; i < o.markerLatencyMs.length; i++) {
                    if (i > 0) {
                        b.append(',');
                    }
                    b.append(String.format(Locale.ROOT, "%.3f", o.markerLatencyMs[i]));
                }
            }
            b.append("]}\n");
            try {
                out.write(b.toString());
                out.flush();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
            total += in;
            idle = (in == 0 && total > 0) ? idle + 1 : 0;
            if ((expect > 0 && total >= expect) || (idleBatches > 0 && idle >= idleBatches)) {
                done.countDown();
            }
        }

        /**
         * Waits until every expected record is in a finished batch, the input went idle, the
         * stop file (`--stop-file`, written by the orchestrator) exists, or the time is up.
         * Says which.
         */
        String await(Map<String, String> a) throws InterruptedException {
            long deadline = System.nanoTime()
                + TimeUnit.SECONDS.toNanos(Long.parseLong(a.getOrDefault("timeout-s", "900")));
            Path stop = a.containsKey("stop-file") ? Paths.get(a.get("stop-file")) : null;
            while (!done.await(100, TimeUnit.MILLISECONDS)) {
                if (stop != null && Files.exists(stop)) {
                    return "asked to stop";
                }
                if (System.nanoTime() > deadline) {
                    return "timed out";
                }
            }
            return "input done";
        }

        synchronized void close() throws IOException {
            out.close();
        }
    }

    /** Writes `path` (empty) to say the job is ready for input. */
    static void ready(Map<String, String> a) {
        String p = a.get("ready");
        if (p == null) {
            return;
        }
        try {
            Path path = Paths.get(p);
            Files.write(path, new byte[0]);
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }
}
