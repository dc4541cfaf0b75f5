//! `chat-load`: see `loadtest/README.md`. Thin wrapper over the library:
//! parse, run, print, write JSON, map the outcome to an exit status.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use loadtest::{Args, LoadError, Summary};

/// Exit statuses (also in `--help`): 2 is clap's own for a bad command line.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_THRESHOLDS: u8 = 3;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        // A shard's thresholds are judged on the merged result.
        Ok(summary) if summary.passed || args.shard.is_some() => ExitCode::SUCCESS,
        Ok(summary) => {
            let failed: Vec<_> = summary
                .failed()
                .iter()
                .map(|v| format!("{} (actual {})", v.rule, v.actual))
                .collect();
            eprintln!("chat-load: threshold failed: {}", failed.join(", "));
            ExitCode::from(EXIT_THRESHOLDS)
        }
        Err(e) => {
            eprintln!("chat-load: {e}");
            ExitCode::from(if matches!(e, LoadError::Args(_)) {
                EXIT_USAGE
            } else {
                EXIT_ERROR
            })
        }
    }
}

/// Runs, then prints the table on stdout and the JSON to `--json`
/// (`-`: JSON on stdout instead of the table); with `--shard`, the summary
/// follows as one JSON line, the last of the output. The JSON file is created before
/// the run, so a bad path fails at once rather than after the load.
fn run(args: &Args) -> Result<Summary, LoadError> {
    let json_error = |path: &std::path::Path, source| LoadError::Json {
        path: path.to_owned(),
        source,
    };
    let json_file = match args.json.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            Some((path, File::create(path).map_err(|e| json_error(path, e))?))
        }
        _ => None,
    };
    let summary = loadtest::run::run(args)?;
    let json = || serde_json::to_string_pretty(&summary).expect("the summary always serializes");
    match json_file {
        None if args.json.is_some() => println!("{}", json()),
        None => println!("{summary}"),
        Some((path, mut file)) => {
            println!("{summary}");
            writeln!(file, "{}", json()).map_err(|e| json_error(path, e))?;
        }
    }
    if args.shard.is_some() {
        // The result to merge: the last line of the output (a pod's log).
        let line = serde_json::to_string(&summary).expect("the summary always serializes");
        println!("{line}");
    }
    Ok(summary)
}
