//! `operator`: the chatback operator's command line.
//!
//! - `operator run`: the controller, with its HTTP endpoints;
//! - `operator crd`: prints the ChatCluster CustomResourceDefinition;
//! - `operator render -f FILE`: prints every child object of the ChatClusters in FILE.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "operator", version, about = "The chatback Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ChatCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print the child objects of the ChatClusters in a file, as multi-document YAML.
    Render {
        /// A YAML file with one or more ChatCluster documents (`-` reads stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", crds::crd_yaml());
            Ok(())
        }
        Command::Render { file } => render(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(file: &PathBuf) -> anyhow::Result<()> {
    let source = file.display().to_string();
    let input = if source == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{source}: {e}"))?
    };
    print!("{}", operator::render::render(&input, &source)?);
    Ok(())
}
