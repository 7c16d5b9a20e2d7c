#![doc = include_str!("../README.md")]
// The pipeline's streaming turn over the encrypted store layer nests deep
// futures; computing their layout needs more than rustc's default query
// depth of 128 in a fresh, feature-unified workspace build.
#![recursion_limit = "256"]
// The binary's output goes through explicit, locked stdout/stderr handles
// (`ui.rs`); these lints guard library crates against stray prints.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: its output is what it is for"
)]

mod args;
mod chat;
mod copy;
mod cut;
mod doctor;
mod error;
mod export;
mod keyscan;
mod migrate;
mod prune;
mod rekey;
mod rewind;
mod sessions;
mod show;
mod sink;
mod store;
mod transfer;
mod ui;
mod version;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command, KeysCommand};
use crate::error::CliError;
use crate::ui::Ui;

fn main() -> ExitCode {
    // Dropped before every return and before `exit`: the drop sends the
    // spans and metrics still pending.
    let telemetry = init_logging();
    let help = store::default_location_help();
    // `--store ''` typed is a mistake; an empty STATESTORE_URL is unset.
    let mut empty_store_flag = false;
    let parsed = args::command(help).try_get_matches().and_then(|matches| {
        empty_store_flag = matches.value_source("store")
            == Some(clap::parser::ValueSource::CommandLine)
            && matches
                .get_one::<String>("store")
                .is_some_and(|s| s.trim().is_empty());
        Cli::from_arg_matches(&matches)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            drop(telemetry);
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit()
            }
            // A usage error may echo what was typed: escaped, as all output.
            let text = e.render().to_string();
            let _ = std::io::Write::write_all(&mut std::io::stderr(), ui::clean(&text).as_bytes());
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let ui = Ui::new(cli.json, cli.quiet);
    if empty_store_flag {
        drop(telemetry);
        return ui.fail(&CliError::Usage {
            message: "--store is empty".into(),
            hint: Some("pass --store URL, or leave it out for the default store".into()),
        });
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return ui.fail(&CliError::Io {
                what: "cannot start the async runtime".into(),
                source: e,
            });
        }
    };
    let result = runtime.block_on(run(&ui, cli));
    runtime.block_on(store::close_all(&ui));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => ui.fail(&e),
    };
    drop(telemetry);
    peak_rss_report(&ui);
    code
}

async fn run(ui: &Ui, cli: Cli) -> Result<(), CliError> {
    let store = cli.store.filter(|s| !s.is_empty());
    store::load_keys(store::KeySource {
        file: cli.keys.as_deref(),
        allow_insecure: cli.allow_insecure_key_file,
        context: cli.context,
    })?;
    match cli.command {
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "statestore", &mut out);
            ui.out(&String::from_utf8_lossy(&out))
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(args::command(store::default_location_help()))
                .render(&mut out)
                .map_err(CliError::io("writing the manual page"))?;
            ui.out(&String::from_utf8_lossy(&out))
        }
        Command::Chat(args) => chat::run(ui, &store::resolve(store)?, args).await,
        Command::List(args) => sessions::list(ui, &store::resolve(store)?, args).await,
        Command::Show(args) => show::show(ui, &store::resolve(store)?, args).await,
        Command::Fork(args) => sessions::fork(ui, &store::resolve(store)?, args).await,
        Command::Rewind(args) => rewind::rewind(ui, &store::resolve(store)?, args).await,
        Command::Branch(args) => rewind::branch(ui, &store::resolve(store)?, args).await,
        Command::Delete(args) => sessions::delete(ui, &store::resolve(store)?, args).await,
        Command::Trim(args) => cut::trim(ui, &store::resolve(store)?, args).await,
        Command::Compact(args) => cut::compact(ui, &store::resolve(store)?, args).await,
        Command::Stats(args) => sessions::stats(ui, &store::resolve(store)?, args).await,
        Command::Prune(args) => prune::prune(ui, &store::resolve(store)?, args).await,
        Command::Export(args) => export::export(ui, &store::resolve(store)?, args).await,
        Command::Import(args) => transfer::import(ui, &store::resolve(store)?, args).await,
        Command::Migrate(args) => migrate::migrate(ui, args).await,
        Command::RotateKeys(args) => rekey::run(ui, &store::resolve(store)?, args).await,
        Command::Keys(KeysCommand::Usage(args)) => {
            keyscan::usage(ui, &store::resolve(store)?, args).await
        }
        Command::Doctor(args) => doctor::run(ui, &store::resolve(store)?, args).await,
    }
}

/// Library warnings (an unsafe Redis eviction policy, a failed summary) to
/// stderr; `STATESTORE_LOG=debug` (or `info`, `trace`, `error`, `off`) for
/// more or less.
///
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, also spans and metrics to that
/// OpenTelemetry collector (`statestore::telemetry`, configured by the
/// standard `OTEL_*` variables; `STATESTORE_LOG` filters stderr only). A
/// setup that fails is a warning, never a failed command. The guard
/// returned sends what is pending when dropped.
fn init_logging() -> Option<statestore::telemetry::TelemetryGuard> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let setting = std::env::var("STATESTORE_LOG").ok();
    let level = match setting.as_deref().map(str::trim) {
        Some("off") => LevelFilter::OFF,
        Some("error") => LevelFilter::ERROR,
        Some("info") => LevelFilter::INFO,
        Some("debug") => LevelFilter::DEBUG,
        Some("trace") => LevelFilter::TRACE,
        None | Some("" | "warn") => LevelFilter::WARN,
        Some(other) => {
            Ui::new(false, false).warn(&format!(
                "STATESTORE_LOG={other:?} is not one of off, error, warn, info, debug, trace: \
                 showing warnings"
            ));
            LevelFilter::WARN
        }
    };
    // Without STATESTORE_LOG, what the libraries warn of is said as the
    // command's own warnings are (`warning: …`); with it, as log lines.
    let voice = matches!(setting.as_deref().map(str::trim), None | Some(""));
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    let telemetry = if otlp {
        match statestore::telemetry::Telemetry::from_env() {
            Ok(telemetry) => Some(telemetry),
            Err(e) => {
                Ui::new(false, false).warn(&format!("no telemetry: {e}"));
                None
            }
        }
    } else {
        None
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time();
    let fmt = if voice {
        fmt.event_format(ui::Voice).boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(level);
    let Some(telemetry) = telemetry else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return None;
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(telemetry.layer())
        .try_init();
    match telemetry.install() {
        Ok(guard) => Some(guard),
        Err(e) => {
            Ui::new(false, false).warn(&format!("no telemetry: {e}"));
            None
        }
    }
}

/// With `STATESTORE_REPORT_PEAK_RSS` set, prints the process's peak
/// resident memory (`VmHWM` of `/proc/self/status`, Linux) to stderr at
/// exit — how the tests check that export and import hold a bounded number
/// of sessions, whatever the number exported. Not for operators.
fn peak_rss_report(ui: &Ui) {
    if std::env::var_os("STATESTORE_REPORT_PEAK_RSS").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        let kib = line
            .trim_start_matches("VmHWM:")
            .trim()
            .trim_end_matches(" kB");
        ui.diag(&format!("peak_rss_kib={kib}"));
    }
}
