//! The `plugin` and `bench` subcommands' arguments (`sluice plugin …`, `sluice bench …`);
//! [`super::run`] dispatches them.

use std::path::PathBuf;

use clap::Subcommand;

/// `sluice plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a ready plugin project in ./NAME: it builds with `plugin build` and passes its
    /// own tests (`cargo test`, `python3 -m unittest`, `node --test`, `make test`).
    New {
        /// The plugin's name.
        name: String,
        /// What it is: transform, sink, receiver or aggregate.
        #[arg(long, default_value = "transform")]
        kind: crate::plugin::project::Kind,
        /// Its language: rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: crate::plugin::project::Lang,
        /// The sluice SDK's directory (default: the one this host was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a transformation (or a sink) on a few records, as a pipeline would: the output
    /// records to stdout, one value a line; rejects (with reasons) and a summary to stderr. A
    /// failed call is an error naming the plugin and its digest (exit non-zero).
    Test {
        /// The .wasm file (its NAME.toml manifest is read from beside it).
        file: PathBuf,
        /// A record's value; repeat for more records.
        #[arg(long)]
        text: Vec<String>,
        /// A file of records, one per line (after the --text ones).
        #[arg(long)]
        input: Option<PathBuf>,
        /// A parameter, KEY=VALUE; repeat for each (over the manifest's defaults).
        #[arg(long = "params", alias = "param", value_name = "KEY=VALUE", value_parser = crate::plugin::trial::parse_param)]
        params: Vec<(String, String)>,
    },
    /// Build the plugin project in DIR (default: here) into NAME.wasm.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print a plugin's world, contract version, imports, size and digest, or why it is refused.
    Check {
        /// The .wasm file (its NAME.toml manifest is read from beside it).
        file: PathBuf,
    },
    /// List the plugins of a directory, or of several as a search path (first match wins;
    /// the plugins a later directory has under the same name are shown as shadowed), with
    /// their descriptions, parameter defaults, limits and capabilities.
    List {
        /// The plugin directories, in search order (`$VAR` expanded).
        #[arg(required = true)]
        dirs: Vec<String>,
    },
    /// Offer a new version of a transformation plugin to a running pipeline, through its admin
    /// endpoint. It is checked as a file dropped in the plugin directory is, and goes live with
    /// the next batch, or is refused with the reason. Exit 0: live (or already live); 2:
    /// refused, or a wrong token or argument; 75: the pipeline cannot be reached.
    Swap {
        /// The running pipeline: its pipeline file (the address and token are read from its
        /// admin file), or the endpoint's address as host:port.
        target: String,
        /// The plugin's name, as the pipeline's `[[transform]] plugin` says.
        name: String,
        /// The new version's .wasm (NAME.toml beside it, if there, is sent as its manifest).
        file: PathBuf,
        /// A new parameter, KEY=VALUE; repeat for each. Given any, they replace the parameters of
        /// every step that uses the plugin (in this run only: the pipeline file is unchanged).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Replace the steps' parameters with none at all.
        #[arg(long, conflicts_with = "params")]
        clear_params: bool,
        /// A file holding the token (default: the pipeline's admin file, or $SLUICE_ADMIN_TOKEN
        /// with an address).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Run a candidate version of a transformation plugin in the shadow of the live one, on the
    /// same input, through the running pipeline's admin endpoint: its output is compared with
    /// the live output and dropped. Waits for the report and prints it. Exit 0: the same
    /// output; 1: it differed; 2: refused, or it failed in the shadow; 75: unreachable.
    Shadow {
        /// The running pipeline: its pipeline file, or the endpoint's address as host:port.
        target: String,
        /// The plugin's name, as the pipeline's `[[transform]] plugin` says.
        name: String,
        /// The candidate's .wasm (NAME.toml beside it, if there, is sent as its manifest).
        file: PathBuf,
        /// How many batches to compare.
        #[arg(long, default_value_t = 5)]
        batches: u32,
        /// Parameters for the candidate, KEY=VALUE (default: the steps' own).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// How long to wait for the report.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// A file holding the token (default: the pipeline's admin file, or $SLUICE_ADMIN_TOKEN
        /// with an address).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Swap in the candidate of the latest shadow run of plugin NAME (it goes live with the
    /// next batch, on trial, with the parameters it ran with in the shadow).
    Promote {
        /// The running pipeline: its pipeline file, or the endpoint's address as host:port.
        target: String,
        /// The plugin's name.
        name: String,
        /// A file holding the token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Take plugin NAME back to the version that was live before the current one (swapped in
    /// this run; it goes live with the next batch, on trial, through every check a new version
    /// passes).
    Rollback {
        /// The running pipeline: its pipeline file, or the endpoint's address as host:port.
        target: String,
        /// The plugin's name.
        name: String,
        /// A file holding the token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Every change of plugin version the pipeline's checkpoint log records (the first batch
    /// on each new version: a hot swap, or a restart on another version, with both digests),
    /// and the verdicts on new versions: rolled back, passed their trial, shadowed.
    History {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The plugin versions rolled back after failing their trial, refused until cleared.
    Quarantine {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Takes a version out of quarantine: a copy of it in the plugin directory may go live
    /// again.
    Clear {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The version's sha256, or its first 8 or more hex digits.
        digest: String,
    },
}

/// `sluice bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Whole pipelines with a plugin step against the same step in native Rust.
    Pipeline {
        /// A run of about half a minute instead of a full one.
        #[arg(long)]
        quick: bool,
        /// Only this workload (`uppercase` or `wordcount`), e.g. to profile it.
        #[arg(long, value_parser = ["uppercase", "wordcount"])]
        only: Option<String>,
        /// The plugin directory.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// Messages/s from an AMQP broker into a counting sink: plain, reliable (WAL on local disk,
    /// and on Azurite when `SLUICE_AZURITE_CONTAINER` is set), and a bare consumer.
    Amqp {
        /// The broker.
        #[arg(
            long,
            env = "SLUICE_AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672"
        )]
        url: String,
        /// Messages per run.
        #[arg(long, default_value_t = 50_000)]
        messages: u64,
        /// Rounds (each runs every mode once).
        #[arg(long, default_value_t = 2)]
        rounds: u32,
    },
    /// Time from a SIGKILL to the first batch committed by the restarted driver (against
    /// Spark's DStream job restarted from its checkpoint, with `--spark`), checkpoint cost per
    /// batch (local disk; Azurite when `SLUICE_AZURITE_CONTAINER` is set), and the throughput
    /// of the exactly-once files pipeline with checkpoints against without.
    Recovery {
        /// Two trials, one exactly-once round, a smaller input (well under 30 s).
        #[arg(long)]
        quick: bool,
        /// Kill-and-restart trials per system (default 5; 2 with --quick).
        #[arg(long)]
        trials: Option<u32>,
        /// Also run Spark's trials (bench/recovery.py from the Spark venv), alternating.
        #[arg(long)]
        spark: bool,
        /// The generator's lines per second, over its 2 partitions.
        #[arg(long, default_value_t = 200_000)]
        rate: u64,
        /// The checkout's bench/ directory (default: the one this host was built from).
        #[arg(long)]
        bench_dir: Option<PathBuf>,
        /// The directory holding uppercase.wasm.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// What a hot swap costs: the extra time of the batch at which a new plugin version goes
    /// live, over the batches around it, and the time from the file landing in the plugin
    /// directory to the first batch on the new version.
    Swap {
        /// Three swaps (a few seconds).
        #[arg(long)]
        quick: bool,
        /// The generator's lines per second, over its 2 partitions.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// The directory holding uppercase.wasm and identity.wasm.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// Several hosts (`[ha]`): the time from a SIGKILL to the dead host's partitions committing
    /// on the survivor, the time for a new host to take its share, and CPU-seconds per million
    /// records with 1, 2 and 3 hosts.
    Failover {
        /// One move trial and a 200,000-line backlog (under a minute).
        #[arg(long)]
        quick: bool,
        /// Kill-and-join trials (default 3; 1 with --quick).
        #[arg(long)]
        trials: Option<u32>,
        /// The directory holding uppercase.wasm.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// What isolating one poison record costs: a 10,000-record block with one marked record,
    /// with the panic, memory-hog and infinite-loop fixtures, against the same block without it.
    Isolation {
        /// Fewer runs (a few seconds).
        #[arg(long)]
        quick: bool,
        /// The epoch tick (`[runtime] epoch-tick`): how finely time budgets are enforced.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
        epoch_tick: std::time::Duration,
        /// The directory holding fixtures/ (built by scripts/build-plugins).
        #[arg(long, env = "SLUICE_COMPONENTS")]
        components: PathBuf,
    },
    /// The Nexmark queries (q0, q1, q2, q5, q7) on the nexmark source at full speed: events per CPU
    /// second and per wall-clock second, one line per query.
    Nexmark {
        /// Three batches a query (a few seconds each) instead of ten.
        #[arg(long)]
        quick: bool,
        /// The directory holding nexmark-query.wasm.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// What the web UI and `/metrics` cost: `bench pipeline`'s throughput with the server on
    /// and a client polling the UI's documents and `/metrics` every 500 ms, against the
    /// server off, alternating; prints the ratio on/off.
    Ui {
        /// One run each way of 5 batches (under a minute) instead of five of 12.
        #[arg(long)]
        quick: bool,
        /// The workload of `bench pipeline`.
        #[arg(long, value_parser = ["uppercase", "wordcount"], default_value = "uppercase")]
        workload: String,
        /// The plugin directory.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
    /// The plugin call path against the same function called natively; with `--lang`, the
    /// same transformations in Rust, Python, JavaScript and C side by side.
    Plugins {
        /// A run of a few seconds instead of a full one.
        #[arg(long)]
        quick: bool,
        /// The directory holding uppercase.wasm and identity.wasm (without `--lang`).
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: Option<PathBuf>,
        /// Run one workload only, `uppercase` or `identity` (without `--lang`), and time no
        /// instantiation: for a profile of its calls (`bench/profile --boundary`).
        #[arg(long, conflicts_with = "lang")]
        only: Option<String>,
        /// Compare languages: `all`, or a comma-separated list of rust, python, js, c. Builds
        /// examples/identity and examples/json-upper in each with `plugin build`.
        #[arg(long)]
        lang: Option<String>,
        /// The checkout's examples directory (default: the one this host was built from).
        #[arg(long)]
        examples: Option<PathBuf>,
        /// Where the examples are copied and built (default: ~/.cache/sluice/bench-plugins).
        #[arg(long)]
        work: Option<PathBuf>,
        /// The venv with pyspark for the Spark Python UDF row (default: bench/spark/venv's,
        /// ~/.cache/sluice/spark-venv, when it exists).
        #[arg(long)]
        spark_venv: Option<PathBuf>,
        /// Leave Spark out.
        #[arg(long)]
        no_spark: bool,
    },
}
