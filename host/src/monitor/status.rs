//! `sluice status [ADDR]`: a running pipeline's overview in the terminal, read from its
//! `/api/v1/overview` (the UI's first page).
//!
//! ADDR is `host:port` or a URL; without it, the admin file of the pipeline given with
//! `--pipeline` (or the one in the current directory's `pipeline.toml`) says where it listens.

use serde_json::Value;

/// Formats an overview document as the terminal summary.
pub fn render(o: &Value) -> String {
    let info = &o["info"];
    let t = &o["totals"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let ready = match &o["ready"] {
        Value::Bool(true) => "ready".to_owned(),
        v => format!("not ready: {}", v.as_str().unwrap_or("?")),
    };
    let mut out = format!(
        "pipeline {} (stream {}), {} — up {:.0} s, pid {}\n",
        info["pipeline"].as_str().unwrap_or("?"),
        info["stream"].as_str().unwrap_or("?"),
        ready,
        num(&o["uptime_s"]),
        info["pid"],
    );
    out += &format!(
        "source {} × {} partitions → {} | batch interval {} ms, {} workers\n",
        info["source"].as_str().unwrap_or("?"),
        info["partitions"],
        info["sinks"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        info["batch_interval_ms"],
        info["workers"],
    );
    out += &format!(
        "batches {} | records in {} out {} | dead letters {} | input {:.0} records/s\n",
        t["batches"],
        t["records_in"],
        t["records_out"],
        t["dead_letters"],
        num(&o["input_rate"]),
    );
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1} ms"));
    out += &format!(
        "mean of the last batches: scheduling delay {}, processing {}, total delay {}\n",
        ms(&o["mean_scheduling_delay_ms"]),
        ms(&o["mean_processing_ms"]),
        ms(&o["mean_total_delay_ms"]),
    );
    let m = &o["memory"];
    out += &format!(
        "memory {:.1} of {:.1} MiB (peak {:.1}), backpressure waits {}\n",
        num(&m["used"]) / 1048576.0,
        num(&m["budget"]) / 1048576.0,
        num(&m["peak"]) / 1048576.0,
        m["backpressure_waits"],
    );
    if let Some(b) = o["last_batch"].as_object() {
        out += &format!(
            "last batch {}: {} in, {} out, processing {} ({})\n",
            b["batch"],
            b["records_in"],
            b["records_out"],
            ms(&b["processing_ms"]),
            b["outcome"].as_str().unwrap_or("?"),
        );
    }
    out
}
