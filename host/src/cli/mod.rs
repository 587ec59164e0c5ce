//! Command-line arguments and dispatch; the work is done by the library's modules.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
pub use commands::{BenchCommand, PluginCommand};

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
            use crate::plugin::project;
            let options = project::NewOptions {
                sdk: sdk.unwrap_or_else(project::default_sdk_path),
            };
            let cwd =
                std::env::current_dir().map_err(Error::io("reading the current directory"))?;
            let dir = project::new_project(lang, kind, &name, &cwd, &options)?;
            println!(
                "Created {}. Next: cd {name} && sluice plugin build",
                dir.display()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Build { dir }) => {
            let wasm = crate::plugin::project::build_project(&dir)?;
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
        Command::Bench(BenchCommand::Plugins {
            quick,
            lang: Some(langs),
            examples,
            work,
            spark_venv,
            no_spark,
            ..
        }) => {
            let options = crate::bench::languages::options(
                &langs, examples, work, spark_venv, no_spark, quick,
            )?;
            print!("{}", crate::bench::languages::run(&options)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Plugins {
            quick,
            plugins,
            only,
            ..
        }) => {
            let plugins = plugins.ok_or_else(|| {
                Error::Usage(
                    "bench plugins: give --plugins DIR (or $SLUICE_PLUGINS), or --lang".into(),
                )
            })?;
            let rt = runtime(cli.cache_dir)?;
            let report = crate::bench::plugins::run(&rt, &plugins, quick, only.as_deref())?;
            print!("{report}");
            Ok(())
        }
    }
}
