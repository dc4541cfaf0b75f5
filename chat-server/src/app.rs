//! Everything one server instance shares between its HTTP handlers and sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::broker::Broker;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::rebalance::Rebalancer;
use crate::store::HistoryStore;
use crate::store::batcher::Batcher;

pub struct App {
    pub config: Config,
    pub hub: Hub,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub store: Arc<dyn HistoryStore>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub verifier: Option<Verifier>,
    /// One permit per open WebSocket (`max_connections`).
    pub connections: Arc<Semaphore>,
    /// One permit per join being served (`join_concurrency`).
    pub joins: Semaphore,
    /// The one shutdown signal every task selects on.
    pub shutdown: CancellationToken,
    /// Open sessions, awaited on shutdown.
    pub sessions: TaskTracker,
    /// The open connections rebalancing may close (`--rebalance`), else None.
    pub rebalancer: Option<Arc<Rebalancer>>,
    next_conn: AtomicU64,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        hub: Hub,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn Presence>,
        store: Arc<dyn HistoryStore>,
        batcher: Batcher,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> App {
        App {
            verifier: config.jwt_secret.as_deref().map(Verifier::new),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            joins: Semaphore::new(config.join_concurrency),
            rebalancer: config
                .rebalance
                .enabled
                .then(|| Arc::new(Rebalancer::new(config.rebalance.clone(), metrics.clone()))),
            config,
            hub,
            broker,
            presence,
            store,
            batcher,
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// `Err(reason)` unless both backends answer.
    pub async fn readiness(&self) -> Result<(), String> {
        let timeout = Duration::from_secs(2);
        match tokio::time::timeout(timeout, self.broker.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("broker check timed out".into()),
        }
        match tokio::time::timeout(timeout, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("history store check timed out".into()),
        }
        if self.batcher.store_down() {
            return Err("history store writes are failing".into());
        }
        Ok(())
    }
}
