//! `operator`: the chatback operator's command line.
//!
//! - `operator run`: the controller, with its HTTP endpoints;
//! - `operator crd [chatcluster|chatloadtest]`: prints a CustomResourceDefinition;
//! - `operator render -f FILE [--show-secrets]`: prints the child objects of the
//!   ChatClusters in FILE (the generated Secret only with `--show-secrets`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use operator::controller::{self, Context, Scope, Settings};
use operator::http::{HttpState, router};
use operator::leader::{self, Election, Outcome};
use operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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
    /// Print a CustomResourceDefinition as YAML.
    Crd {
        /// Which one.
        #[arg(value_enum, default_value = "chatcluster")]
        kind: CrdKind,
    },
    /// Print the child objects of the ChatClusters in a file, as multi-document YAML.
    Render {
        /// A YAML file with one or more ChatCluster documents (`-` reads stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Also print the generated Secret, with freshly generated credentials
        /// (by default it is left out: applying new values would overwrite live ones).
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    Chatcluster,
    Chatloadtest,
}

#[derive(Args)]
struct RunArgs {
    /// Address of the operator's own HTTP server (/healthz, /readyz, /metrics).
    #[arg(long, env = "OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// This replica's name in Events and its leader-election identity (the pod
    /// name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Comma-separated namespaces to watch; empty watches every namespace
    /// (which needs the cluster-wide RBAC of k8s/rbac.yaml).
    #[arg(long, env = "WATCH_NAMESPACES", default_value = "")]
    watch_namespaces: String,
    /// Run as one of several replicas: only the holder of the Lease reconciles.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// The namespace of the Lease (the operator's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "chat-app")]
    lease_namespace: String,
    /// The Lease's name.
    #[arg(long, env = "LEASE_NAME", default_value = "chatback-operator")]
    lease_name: String,
    /// Seconds a lease stays valid without renewal (the longest takeover after a crash).
    #[arg(long, env = "LEASE_DURATION_SECS", default_value_t = 15)]
    lease_duration_secs: u64,
    /// Seconds before expiry at which the leader renews.
    #[arg(long, env = "LEASE_GRACE_SECS", default_value_t = 5)]
    lease_grace_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run(args))),
        Command::Crd { kind } => {
            print!(
                "{}",
                match kind {
                    CrdKind::Chatcluster => crds::crd_yaml(),
                    CrdKind::Chatloadtest => crds::load_test_crd_yaml(),
                }
            );
            Ok(())
        }
        Command::Render { file, show_secrets } => render(&file, show_secrets),
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
    let scope = Scope::parse(&args.watch_namespaces)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster service account or KUBECONFIG)")?;
    controller::ensure_crd_installed(&client).await?;
    // Load tests are optional: without their CRD only ChatClusters are run.
    let load_tests = match controller::ensure_served::<crds::ChatLoadTest>(&client).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "not running ChatLoadTests: install crds/chatloadtest.yaml to run them");
            false
        }
    };

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

    let ctx = Context::new(
        client.clone(),
        metrics,
        Settings::default(),
        args.instance.clone(),
    );
    ready.store(true, Ordering::Relaxed);
    info!(?scope, "controller running");
    let outcome = if args.leader_elect {
        let election = Election {
            namespace: args.lease_namespace,
            lease: args.lease_name,
            identity: args.instance.unwrap_or_default(),
            duration: Duration::from_secs(args.lease_duration_secs),
            grace: Duration::from_secs(args.lease_grace_secs),
        };
        leader::lead(client, &election, shutdown.clone(), |stop| {
            controllers(ctx, scope, load_tests, stop)
        })
        .await
    } else {
        controllers(ctx, scope, load_tests, shutdown.clone()).await;
        Ok(Outcome::Shutdown)
    };
    ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    http.await.context("HTTP server task")??;
    match outcome? {
        Outcome::Shutdown => info!("stopped"),
        Outcome::Lost => anyhow::bail!(
            "lost the leader lease to another replica; exiting, to restart as a standby"
        ),
    }
    Ok(())
}

/// The ChatCluster controller, and the ChatLoadTest one when its CRD is installed.
async fn controllers(ctx: Arc<Context>, scope: Scope, load_tests: bool, stop: CancellationToken) {
    let load_test = async {
        if load_tests {
            operator::load_test::run(ctx.clone(), scope.clone(), stop.clone()).await;
        }
    };
    tokio::join!(
        controller::run(ctx.clone(), scope.clone(), stop.clone()),
        load_test
    );
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

fn render(file: &PathBuf, show_secrets: bool) -> anyhow::Result<()> {
    let source = file.display().to_string();
    let input = if source == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{source}: {e}"))?
    };
    print!(
        "{}",
        operator::render::render(&input, &source, show_secrets)?
    );
    Ok(())
}
