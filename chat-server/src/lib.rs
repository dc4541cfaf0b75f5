//! chat-server: WebSocket chat rooms over Redis Pub/Sub with PostgreSQL history.
//!
//! The library is the server; the binary only parses [`Config`], sets up logging and
//! calls [`run`] with a listener from [`bind`] and a shutdown future. Tests and the load
//! tool start servers in-process the same way. The wire contract is
//! docs/protocol.md.
//!
//! How the modules fit together, from the socket inward:
//!
//! - [`config`]: every flag and environment variable, and their validation.
//! - `http`: the axum router: the WebSocket upgrade, the JSON API, probes, metrics
//!   and the web page; `auth` resolves a connection's user (JWT or guest name).
//! - `session`: one connection, split into a reader that handles client frames
//!   and a writer that drains its bounded `outbound` queue; `rate` is its
//!   token bucket.
//! - `hub`: this instance's rooms, one actor per room that orders and fans out
//!   its events, and fills gaps from the history store.
//! - The three backend seams, each a trait with a memory (or SQLite) and a
//!   Redis (or PostgreSQL) implementation side by side: `broker` (seqs and
//!   fan-out between instances), `presence` (who is in a room) and [`store`]
//!   (durable history, with the group-committing `batcher` and the shutdown
//!   `spill`). `redis_commands` is the one Redis connection the first two share.
//! - `rebalance`: the opt-in moving of connections after a scale-up.
//! - `app`: the state every handler shares; [`metrics`]: the Prometheus registry.
//!
//! Public are [`Config`], [`bind`] and [`run`], the wire format ([`protocol`]) that chat-load's
//! contract test checks, and what the store's black-box tests drive directly
//! ([`store`], [`metrics`]).

mod app;
mod auth;
mod broker;
mod clock;
pub mod config;
mod http;
mod hub;
pub mod metrics;
mod outbound;
mod presence;
pub mod protocol;
mod rate;
mod rebalance;
mod redis_commands;
mod session;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::app::App;
use crate::broker::Broker;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::hub::{Hub, Rooms};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::redis_commands::Commands;
use crate::store::HistoryStore;
use crate::store::batcher::{Batcher, Stop};
use crate::store::postgres::PostgresStore;
use crate::store::spill::RedisSpill;
use crate::store::sqlite::SqliteStore;

/// A boxed, sendable future: the return type of the backend traits' methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long before the end of the grace period the batcher stops waiting for a
/// down store and spills what it holds (a Redis command, retried once, fits).
const SPILL_MARGIN: Duration = Duration::from_secs(3);

/// Binds the listening socket with room for `backlog` connections the kernel has
/// completed and the server not yet accepted (Linux caps it at
/// `net.core.somaxconn`). The standard library's 128 overflowed in a join burst:
/// the kernel dropped the SYNs past it, and each of those clients waited for its
/// 1 s SYN retransmit, so 1,000 joins at 5,000/s had a connect p99 of 1.1 s
/// though the server's core was mostly idle.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves chat on `listener` until `shutdown` resolves, then closes every socket
/// with 1001, flushes pending history writes and returns, within
/// `shutdown_grace_secs`. Fails at startup if a configured backend is unreachable.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let instance = config.instance_name();
    // Unique per process even when instances share a hostname.
    let node = format!("{instance}-{:08x}", rand::random::<u32>());

    let store: Arc<dyn HistoryStore> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("connecting to PostgreSQL")?,
        ),
        None => Arc::new(
            SqliteStore::open(&config.sqlite_path)
                .await
                .with_context(|| format!("opening SQLite at {}", config.sqlite_path.display()))?,
        ),
    };
    let rooms = Arc::new(Rooms::default());
    // Redis commands for rebalancing, which only Redis mode has (`validate`).
    let mut rebalance_commands = None;
    let (broker, presence, spill): (Arc<dyn Broker>, Arc<dyn Presence>, _) = match &config.redis_url
    {
        Some(url) => {
            let client = redis::Client::open(url.as_str()).context("parsing REDIS_URL")?;
            let commands = Commands::connect(client.clone(), config.redis_timeout())
                .await
                .context("connecting to Redis")?;
            let broker = RedisBroker::start(
                client,
                commands.clone(),
                rooms.clone(),
                node.clone(),
                token.clone(),
            );
            rebalance_commands = Some(commands.clone());
            let spill = RedisSpill::new(commands.clone(), &config.store_name(), node.clone());
            let presence =
                RedisPresence::start(commands, node.clone(), config.presence_ttl(), token.clone());
            (Arc::new(broker), Arc::new(presence), Some(spill))
        }
        None => (
            Arc::new(MemoryBroker::new(rooms.clone())),
            Arc::new(MemoryPresence::default()),
            None,
        ),
    };
    let give_up = CancellationToken::new();
    let (batcher, batcher_task) = Batcher::spawn(
        store.clone(),
        (config.persist_batch, config.persist_queue),
        metrics.clone(),
        spill.clone(),
        Stop {
            shutdown: token.clone(),
            give_up: give_up.clone(),
        },
    );
    if let Some(spill) = spill {
        spill.start(batcher.clone(), token.clone());
    }
    let hub = Hub::new(
        rooms,
        broker.clone(),
        store.clone(),
        metrics.clone(),
        config.gap_wait(),
    );
    let grace = config.shutdown_grace();
    let app = Arc::new(App::new(
        config,
        hub,
        broker,
        presence,
        store,
        batcher,
        metrics,
        token.clone(),
    ));

    if let (Some(rebalancer), Some(commands)) = (&app.rebalancer, rebalance_commands) {
        tokio::spawn(
            rebalancer
                .clone()
                .run(commands, node.clone(), token.clone()),
        );
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        node,
        broker = if app.config.redis_url.is_some() { "redis" } else { "memory" },
        store = if app.config.database_url.is_some() { "postgres" } else { "sqlite" },
        "chat-server listening"
    );
    let signal = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => signal.cancel(),
            _ = signal.cancelled() => {}
        }
    });
    // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle holds an
    // `ack` behind the unacknowledged echo until the client's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
    });
    let serve = axum::serve(listener, http::router(app.clone()))
        .with_graceful_shutdown(token.clone().cancelled_owned());
    let served = serve.await;
    token.cancel();

    let started = Instant::now();
    tracing::info!("shutting down: closing sockets with 1001");
    app.sessions.close();
    if tokio::time::timeout(grace, app.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not close within the grace period");
    }
    drop(app);
    let mut batcher_task = batcher_task;
    let left = grace.saturating_sub(started.elapsed());
    let mut flushed = tokio::time::timeout(left.saturating_sub(SPILL_MARGIN), &mut batcher_task)
        .await
        .is_ok();
    if !flushed {
        tracing::warn!(
            "history writes still pending near the end of the grace period; giving up on the store"
        );
        give_up.cancel();
        flushed = tokio::time::timeout(SPILL_MARGIN, &mut batcher_task)
            .await
            .is_ok();
    }
    if flushed {
        tracing::info!("pending history writes flushed or spilled");
    } else {
        // Stop it, as exiting would: `run` leaves no task behind.
        batcher_task.abort();
        tracing::error!("history writes still pending at the end of the grace period");
    }
    served.context("HTTP server failed")
}
