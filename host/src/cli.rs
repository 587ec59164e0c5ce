//! Command-line arguments and dispatch; the work is done by the library's modules.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::driver::{RunOptions, Shutdown};
use crate::error::{EXIT_OK, Error, Result};
use crate::plugin::limits::RuntimeConfig;
use crate::plugin::{PluginRuntime, scaffold};
use crate::telemetry::{self, LogFormat};

/// sluice: micro-batch stream processing with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// How log lines are written (to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The log level (`error`, `warn`, `info`, `debug`, `trace`) or a filter in `RUST_LOG`'s
    /// syntax (e.g. `info,sluice::ha=debug`); wins over -q, -v and `RUST_LOG`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Quieter: warnings and errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Louder: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Where compiled plugins are cached (default: $SLUICE_CACHE_DIR or ~/.cache/sluice/components).
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// A plugin directory; repeat for a search path, first match wins (replaces the file's
        /// `plugins`).
        #[arg(long)]
        plugins: Vec<PathBuf>,
        /// Stop after this many batches.
        #[arg(long)]
        max_batches: Option<u64>,
        /// Write one JSON line per finished batch here (batch, time_ms, done_ms, records_in,
        /// records_out, dead_letters, processing_ms, scheduling_delay_ms, total_delay_ms,
        /// marker_latency_ms).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Start over: remove the pipeline's checkpoint log, write-ahead log and the earlier
        /// output of its files sinks, then run from batch 0. Without it a run resumes from its
        /// checkpoint, and refuses to start over output it has no checkpoint for.
        #[arg(long)]
        from_scratch: bool,
        /// Run the pipeline in a child process and restart it when it crashes (with backoff;
        /// never after a bad pipeline or plugin, exit 2, or a fence, exit 3; giving up with exit
        /// 70 after 5 crashes in a row at start). SIGTERM and SIGINT are passed on to the child.
        #[arg(long)]
        supervise: bool,
        /// Several hosts (`[ha]`): the name this process's member id starts with (overrides
        /// `[ha] owner`; a random suffix is always added, so each start is a new member).
        #[arg(long)]
        owner: Option<String>,
        /// Serve the web UI (and `/api/v1/`, `/metrics`, `/healthz`, `/readyz`) at ADDR
        /// (host:port); `--ui` alone takes 127.0.0.1:4040 or the next free port up to 4049.
        /// Without it the UI is served on 127.0.0.1:4040 when a terminal is attached, else on
        /// `[admin] listen` (a free loopback port; the admin file says which).
        #[arg(long, value_name = "ADDR", num_args = 0..=1)]
        ui: Option<Option<std::net::SocketAddr>>,
    },
    /// A running pipeline's summary (what the web UI's first page shows), read from its
    /// endpoint's `/api/v1/`.
    Status {
        /// The pipeline file (its admin file says where it listens), or host:port, or a URL
        /// http://host:port/. Default: 127.0.0.1:4040.
        target: Option<String>,
        /// Print the overview as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a pipeline's checkpoint log.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Check a pipeline: load its plugins, check their worlds and parameters, reach its
    /// stores; run nothing.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
        /// A plugin directory; repeat for a search path, first match wins (replaces the file's
        /// `plugins`).
        #[arg(long)]
        plugins: Vec<PathBuf>,
    },
    /// Read a pipeline's dead letters, and send chosen ones through its current steps again.
    #[command(subcommand)]
    DeadLetters(crate::dead_letters::DeadLettersCommand),
    /// Recompute recorded batches from their logged ranges (the source read again, or the
    /// write-ahead log) into a separate output, with their recorded plugin versions or the
    /// ones given: a backfill, or two versions compared on history. Reads the checkpoint log
    /// only; the pipeline may be running.
    Replay {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Which batches: A..B (B excluded), A..=B, or N.
        #[arg(long)]
        batches: crate::replay::BatchRange,
        /// Run plugin NAME from FILE instead of its recorded version (repeatable).
        #[arg(long = "plugin", value_name = "NAME=FILE", value_parser = parse_plugin)]
        plugin: Vec<(String, PathBuf)>,
        /// Where the output goes: a directory or store URL, never the pipeline's own.
        #[arg(long)]
        out: String,
        /// Clear the out location first when it is not empty.
        #[arg(long)]
        overwrite: bool,
        /// The plugin directory (overrides the file's `plugins`).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Work with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `sluice checkpoint …`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// One line per entry: batch, time, records, plugins.
    List {
        /// The pipeline file (its `[checkpoint] path` is read).
        pipeline: PathBuf,
        /// Print JSON (one array of entries) instead.
        #[arg(long)]
        json: bool,
    },
    /// Everything an entry holds: per partition its offsets and source positions, the WAL
    /// positions still needed, the plugin digests.
    Inspect {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The batch (default: the newest entry).
        batch: Option<u64>,
        /// Print the entry as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `sluice plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a ready plugin project in ./NAME: it builds with `plugin build` and passes its
    /// own `cargo test`.
    New {
        /// The plugin's name.
        name: String,
        /// What it is: transform, sink, receiver or aggregate.
        #[arg(long, default_value = "transform")]
        kind: crate::plugin::templates::TemplateKind,
        /// Its language: rust (Python, JavaScript and C are not yet supported, issue #15).
        #[arg(long, default_value = "rust")]
        lang: String,
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
    /// The plugin call path against the same function called natively.
    Plugins {
        /// A run of a few seconds instead of a full one.
        #[arg(long)]
        quick: bool,
        /// The directory holding uppercase.wasm and identity.wasm.
        #[arg(long, env = "SLUICE_PLUGINS")]
        plugins: PathBuf,
    },
}

/// `--plugin NAME=FILE`.
fn parse_plugin(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{s:?}: give NAME=FILE, e.g. tag=./v2/tag.wasm")),
    }
}

/// Parses the command line, runs the command, and turns an error into a message and its exit
/// code ([`Error::exit_code`]: 2 the user's fault, 3 fenced, 70 internal, 75 external).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&telemetry::LogOptions {
        format: cli.log_format,
        level: cli.log_level.clone(),
        quiet: cli.quiet,
        verbose: cli.verbose,
    });
    let result = dispatch(cli);
    // Keyed state's spill files are scratch: gone with the process (the plan, which owns
    // them, may outlive `dispatch` in threads that are not joined).
    crate::state::spill::remove_process_dirs();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command, `run --supervise` included, and returns the code to exit with.
pub fn dispatch(cli: Cli) -> Result<u8> {
    if let Command::Run {
        pipeline,
        supervise: true,
        ..
    } = &cli.command
    {
        return crate::driver::supervise::run(pipeline);
    }
    if let Command::Plugin(PluginCommand::Shadow {
        target,
        name,
        file,
        batches,
        params,
        wait,
        token_file,
    }) = &cli.command
    {
        let params = match params.is_empty() {
            true => None,
            false => Some(crate::admin::client::parse_params(params)?),
        };
        let args = crate::admin::client::SwapArgs {
            target,
            name,
            file,
            params,
            token_file: token_file.as_deref(),
        };
        return Ok(crate::admin::shadow::shadow_command(
            &args, *batches, *wait,
        )?);
    }
    run(cli).map(|()| EXIT_OK)
}

/// The plan of `pipeline`, built outside the runtime `rt` (it waits on stores).
fn plan_for(
    rt: &tokio::runtime::Runtime,
    pipeline: &std::path::Path,
    plugins: &[PathBuf],
    cache_dir: Option<&std::path::Path>,
) -> Result<crate::plan::Plan> {
    Ok(crate::plan::build_searching(
        pipeline,
        plugins,
        cache_dir,
        rt.handle(),
    )?)
}

/// Turns SIGTERM and SIGINT into stop requests from now on: the first asks for a graceful stop
/// (finish what was received, commit, exit 0), a second of either kind for a stop after the
/// running batch. Listening starts before this returns, so no signal kills the process after it.
fn stop_on_signals(rt: &tokio::runtime::Runtime, stop: Shutdown) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _in_runtime = rt.enter();
    let listen = |kind| signal(kind).map_err(Error::io("listening for stop signals"));
    let (mut term, mut int) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
    );
    rt.spawn(async move {
        for requests in 1u32.. {
            let signal = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            if requests == 1 {
                tracing::info!(signal, "Stop requested: finishing what was received, then stopping (signal again to stop after the running batch).");
            } else {
                tracing::warn!(signal, "Stop requested again: stopping after the running batch; what was received after it is not processed.");
            }
            stop.request();
        }
    });
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-io")
        .build()
        .map_err(Error::io("starting the async runtime"))
}

fn runtime(cli_cache: Option<PathBuf>) -> Result<PluginRuntime> {
    let config = RuntimeConfig {
        cache_dir: cli_cache,
        ..RuntimeConfig::default()
    };
    Ok(PluginRuntime::new(config)?)
}

/// Runs one parsed command; `run --supervise` is [`dispatch`]'s (here it runs unsupervised).
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            plugins,
            max_batches,
            report,
            from_scratch,
            supervise: _,
            owner,
            ui,
        } => {
            let rt = tokio_runtime()?;
            let stop = Shutdown::default();
            stop_on_signals(&rt, stop.clone())?;
            let mut plan = plan_for(&rt, &pipeline, &plugins, cli.cache_dir.as_deref())?;
            let ha = crate::driver::ha::prepare(&mut plan, owner.as_deref())?;
            let opts = RunOptions {
                max_batches,
                progress: true,
                report,
                from_scratch,
                ha,
                ui: crate::admin::UiOptions {
                    requested: ui.is_some(),
                    listen: ui.flatten(),
                    default_port: ui == Some(None) || std::io::stderr().is_terminal(),
                    announce: std::io::stderr().is_terminal(),
                },
            };
            let summary = crate::driver::run(&plan, &rt, &opts, &stop)?;
            tracing::info!(
                batches = summary.batches,
                records_in = summary.records_in,
                records_out = summary.records_out,
                dead_letters = summary.dead_letters,
                peak_buffered_mib = (summary.peak_buffered as f64 / 104857.6).round() / 10.0,
                backpressure_waits = summary.backpressure_waits,
                "The pipeline stopped."
            );
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(())
        }
        Command::Status { target, json } => {
            let overview = crate::admin::client::overview(target.as_deref())?;
            match json {
                true => println!("{overview:#}"),
                false => print!("{}", crate::monitor::status::render(&overview)),
            }
            Ok(())
        }
        Command::Checkpoint(CheckpointCommand::List { pipeline, json }) => {
            crate::checkpoint::show::run(&pipeline, crate::checkpoint::show::Show::List, json)
        }
        Command::Checkpoint(CheckpointCommand::Inspect {
            pipeline,
            batch,
            json,
        }) => crate::checkpoint::show::run(
            &pipeline,
            crate::checkpoint::show::Show::Inspect(batch),
            json,
        ),
        Command::DeadLetters(cmd) => crate::dead_letters::run(cmd, cli.cache_dir),
        Command::Replay {
            pipeline,
            batches,
            plugin,
            out,
            overwrite,
            plugins,
        } => {
            let opts = crate::replay::Options {
                pipeline,
                batches,
                plugins: plugin,
                out,
                overwrite,
                plugin_dir: plugins,
                cache_dir: cli.cache_dir,
            };
            print!("{}", crate::replay::run(&opts)?);
            Ok(())
        }
        Command::Validate { pipeline, plugins } => {
            let rt = tokio_runtime()?;
            let plan = plan_for(&rt, &pipeline, &plugins, cli.cache_dir.as_deref())?;
            println!(
                "{}: ok. Stream `{}`, {} partitions, {} steps, {} sinks, {} workers.",
                pipeline.display(),
                plan.stream,
                plan.partitions,
                plan.steps.len(),
                plan.sinks.len(),
                plan.workers
            );
            for (name, digest) in &plan.digests {
                println!("plugin {name} sha256 {digest}");
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::New {
            name,
            kind,
            lang,
            sdk,
        }) => {
            crate::plugin::templates::check_lang(&lang).map_err(Error::Usage)?;
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk_path);
            let cwd =
                std::env::current_dir().map_err(Error::io("reading the current directory"))?;
            let dir = scaffold::new_project(&name, &cwd, &sdk, kind)?;
            println!(
                "Created {}. Next: cd {name} && sluice plugin build",
                dir.display()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Build { dir }) => {
            let wasm = scaffold::build_project(&dir)?;
            let rt = runtime(cli.cache_dir)?;
            print!("{}", scaffold::check(&rt, &wasm)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::Check { file }) => {
            let rt = runtime(cli.cache_dir)?;
            print!("{}", scaffold::check(&rt, &file)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::List { dirs }) => {
            let rt = runtime(cli.cache_dir)?;
            let path = crate::plugin::search::PluginPath::of_entries(&dirs);
            print!("{}", scaffold::list(&rt, &path)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::Test {
            file,
            text,
            input,
            params,
        }) => {
            use crate::plugin::trial;
            let records = trial::records(&text, input.as_deref())?;
            let rt = runtime(cli.cache_dir)?;
            trial::print(&trial::run(
                &rt,
                &file,
                &records,
                &params.into_iter().collect(),
            )?);
            Ok(())
        }
        Command::Plugin(PluginCommand::Swap {
            target,
            name,
            file,
            params,
            clear_params,
            token_file,
        }) => {
            let params = match (clear_params, params.is_empty()) {
                (true, _) => Some(Default::default()),
                (false, true) => None,
                (false, false) => Some(crate::admin::client::parse_params(&params)?),
            };
            let swap = crate::admin::client::SwapArgs {
                target: &target,
                name: &name,
                file: &file,
                params,
                token_file: token_file.as_deref(),
            };
            println!("{}", crate::admin::client::swap_command(&swap)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::Shadow { .. }) => unreachable!("dispatch runs it"),
        Command::Plugin(PluginCommand::Promote {
            target,
            name,
            token_file,
        }) => {
            println!(
                "{}",
                crate::admin::shadow::promote_command(&target, &name, token_file.as_deref())?
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Rollback {
            target,
            name,
            token_file,
        }) => {
            println!(
                "{}",
                crate::admin::shadow::rollback_command(&target, &name, token_file.as_deref())?
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::History { pipeline, json }) => {
            crate::checkpoint::show::run(&pipeline, crate::checkpoint::show::Show::History, json)
        }
        Command::Plugin(PluginCommand::Quarantine { pipeline, json }) => {
            crate::swap::quarantine::show(&pipeline, json)
        }
        Command::Plugin(PluginCommand::Clear { pipeline, digest }) => {
            crate::swap::quarantine::clear(&pipeline, &digest)
        }
        Command::Bench(BenchCommand::Pipeline {
            quick,
            only,
            plugins,
        }) => {
            print!(
                "{}",
                crate::bench::pipeline::run(&plugins, quick, only.as_deref())?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Amqp {
            url,
            messages,
            rounds,
        }) => {
            print!("{}", crate::bench::amqp::run(&url, messages, rounds)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Recovery {
            quick,
            trials,
            spark,
            rate,
            bench_dir,
            plugins,
        }) => {
            let opts = crate::bench::recovery::Options {
                plugins,
                cache_dir: cli.cache_dir,
                trials: trials.unwrap_or(if quick { 2 } else { 5 }),
                quick,
                spark,
                bench_dir: bench_dir.unwrap_or_else(crate::bench::recovery::default_bench_dir),
                rate,
            };
            print!("{}", crate::bench::recovery::run(&opts)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Failover {
            quick,
            trials,
            plugins,
        }) => {
            let opts = crate::bench::failover::Options {
                plugins,
                cache_dir: cli.cache_dir,
                trials: trials.unwrap_or(if quick { 1 } else { 3 }),
                lines: if quick { 200_000 } else { 1_000_000 },
            };
            print!("{}", crate::bench::failover::run(&opts)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Swap {
            quick,
            rate,
            plugins,
        }) => {
            let opts = crate::bench::swap::Options {
                plugins,
                cache_dir: cli.cache_dir,
                swaps: if quick { 3 } else { 10 },
                rate,
            };
            print!("{}", crate::bench::swap::run(&opts)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Isolation {
            quick,
            epoch_tick,
            components,
        }) => {
            let rt = PluginRuntime::new(RuntimeConfig {
                cache_dir: cli.cache_dir,
                epoch_tick,
                ..RuntimeConfig::default()
            })?;
            print!("{}", crate::bench::isolation::run(&rt, &components, quick)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Nexmark { quick, plugins }) => {
            print!("{}", crate::bench::nexmark::run(&plugins, quick)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Ui {
            quick,
            workload,
            plugins,
        }) => {
            print!("{}", crate::bench::ui::run(&plugins, quick, &workload)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Plugins { quick, plugins }) => {
            let rt = runtime(cli.cache_dir)?;
            let report = crate::bench::plugins::run(&rt, &plugins, quick)?;
            print!("{report}");
            Ok(())
        }
    }
}
