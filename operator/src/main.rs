//! `operator`: the chatback operator's command line.
//!
//! - `operator run`: the controller, with its HTTP endpoints;
//! - `operator crd`: prints the ChatCluster CustomResourceDefinition;
//! - `operator render -f FILE`: prints every child object of the ChatClusters in FILE.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use operator::controller::{self, Context, Settings};
use operator::http::{HttpState, router};
use operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "operator", version, about = "The chatback Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster service account, or KUBECONFIG).
    Run(RunArgs),
    /// Print the ChatCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print the child objects of the ChatClusters in a file, as multi-document YAML.
    Render {
        /// A YAML file with one or more ChatCluster documents (`-` reads stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Address of the operator's own HTTP server (/healthz, /readyz, /metrics).
    #[arg(long, env = "OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// This replica's name in Events (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run(args))),
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

/// `LOG_FORMAT=json` switches to JSON logs; `RUST_LOG` sets the filter (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster service account or KUBECONFIG)")?;
    controller::ensure_crd_installed(&client).await?;

    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let state = HttpState {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
    let http = tokio::spawn(
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    let ctx = Context::new(client, metrics, Settings::default(), args.instance);
    ready.store(true, Ordering::Relaxed);
    info!("controller running");
    controller::run(ctx, shutdown.clone().cancelled_owned()).await;
    ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    http.await.context("HTTP server task")??;
    info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("interrupted; shutting down"),
        () = terminate => info!("SIGTERM; shutting down"),
    }
    shutdown.cancel();
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
