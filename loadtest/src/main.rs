//! `chat-load`: see `loadtest/README.md`. Thin wrapper over the library:
//! parse, run, print, write JSON, map the outcome to an exit status.

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
    let summary = match loadtest::run::run(&args) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("chat-load: {e}");
            let code = if matches!(e, LoadError::Args(_)) {
                EXIT_USAGE
            } else {
                EXIT_ERROR
            };
            return ExitCode::from(code);
        }
    };
    if let Err(e) = output(&args, &summary) {
        eprintln!("chat-load: {e}");
        return ExitCode::from(EXIT_ERROR);
    }
    let failed = summary.failed();
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    let rules: Vec<_> = failed
        .iter()
        .map(|v| format!("{} (actual {})", v.rule, v.actual))
        .collect();
    eprintln!("chat-load: threshold failed: {}", rules.join(", "));
    ExitCode::from(EXIT_THRESHOLDS)
}

/// The table on stdout, and the JSON to `--json` (`-`: stdout instead of the table).
fn output(args: &Args, summary: &Summary) -> Result<(), LoadError> {
    let json = || serde_json::to_string_pretty(summary).expect("the summary always serializes");
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{}", json()),
        Some(path) => {
            println!("{summary}");
            std::fs::File::create(path)
                .and_then(|mut f| writeln!(f, "{}", json()))
                .map_err(|source| LoadError::Json {
                    path: path.to_owned(),
                    source,
                })?;
        }
        None => println!("{summary}"),
    }
    Ok(())
}
