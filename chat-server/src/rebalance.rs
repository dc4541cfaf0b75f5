//! Opt-in connection rebalancing (`--rebalance`), for after a scale-up.
//!
//! WebSockets are long-lived: when an autoscaler adds instances, the existing
//! connections stay where they are and the new instances sit idle. With
//! rebalancing on, every instance reports its connection count to Redis each
//! interval (hash `chat:load`, field = node, value `<count> <expiry ms>`; an entry
//! whose expiry passed belongs to a dead instance and is ignored) and reads
//! everyone's. An instance above the cluster mean × (1 + tolerance) closes its
//! excess over the mean, at most `--rebalance-max-closes` per interval: it asks
//! their sessions to move, and each stops reading, delivers the acks of the sends
//! it took (at most [`SETTLE`]) and closes with 4001 `rebalance`. Those clients
//! reconnect through the load balancer and rejoin with `since`, so they lose
//! nothing (docs/protocol.md, "Rebalancing").
//! Only Redis mode has a cluster to balance, so the flag requires `--redis-url`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::RedisError;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::protocol::CLOSE_REBALANCE;
use crate::redis_commands::Commands;

/// The hash holding every instance's connection count.
const KEY: &str = "chat:load";
/// The close reason sent with [`CLOSE_REBALANCE`].
pub const REASON: &str = "rebalance";
/// A report stays valid for this many intervals (a missed one is tolerated).
const TTL_INTERVALS: u32 = 3;
/// How long a connection asked to move waits for the acks of its accepted sends.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The `--rebalance*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RebalanceConfig {
    /// Close (4001 `rebalance`) some connections of an instance well above the
    /// cluster's mean, so that they reconnect elsewhere. Needs --redis-url; turn it
    /// on for every instance (an instance without it reports no count).
    #[arg(
        long = "rebalance",
        env = "CHAT_REBALANCE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub enabled: bool,

    /// How far above the mean an instance may be before it sheds connections,
    /// as a fraction: 0.2 means above mean × 1.2.
    #[arg(
        long = "rebalance-tolerance",
        env = "CHAT_REBALANCE_TOLERANCE",
        default_value_t = 0.2
    )]
    pub tolerance: f64,

    /// Seconds between two reports (and two decisions) of an instance.
    #[arg(
        long = "rebalance-interval-secs",
        env = "CHAT_REBALANCE_INTERVAL_SECS",
        default_value_t = 10
    )]
    pub interval_secs: u64,

    /// Most connections an instance closes per interval.
    #[arg(
        long = "rebalance-max-closes",
        env = "CHAT_REBALANCE_MAX_CLOSES",
        default_value_t = 100
    )]
    pub max_closes: usize,
}

impl RebalanceConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// Rejects settings that cannot work, naming the flag.
    pub fn validate(&self, redis: bool) -> Result<(), String> {
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err("--rebalance-tolerance must be a number of at least 0".into());
        }
        if self.interval_secs == 0 {
            return Err("--rebalance-interval-secs must be at least 1".into());
        }
        if self.max_closes == 0 {
            return Err("--rebalance-max-closes must be at least 1".into());
        }
        if self.enabled && !redis {
            return Err("--rebalance needs --redis-url (there is no cluster without it)".into());
        }
        Ok(())
    }
}

/// How many of `local` connections to close: none unless `local` is above
/// mean × (1 + tolerance), else the excess over the mean (rounded up), at most
/// `max`. `counts` holds every live instance's count, this one's included.
pub fn excess(local: usize, counts: &[usize], tolerance: f64, max: usize) -> usize {
    if counts.len() < 2 {
        return 0;
    }
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    if local as f64 <= mean * (1.0 + tolerance) {
        return 0;
    }
    local.saturating_sub(mean.ceil() as usize).min(max)
}

/// This instance's open connections, which rebalancing may ask to move.
pub struct Rebalancer {
    config: RebalanceConfig,
    metrics: Arc<Metrics>,
    connections: Mutex<HashMap<u64, Candidate>>,
}

/// One open connection: its queue (closed: it is leaving anyway) and the
/// signal that asks its session to move.
struct Candidate {
    out: Outbound,
    asked: CancellationToken,
}

impl Candidate {
    fn staying(&self) -> bool {
        !self.out.is_closed() && !self.asked.is_cancelled()
    }
}

/// Keeps a connection in the rebalancer's set; removes it when dropped.
pub struct Registration {
    rebalancer: Arc<Rebalancer>,
    conn: u64,
    asked: CancellationToken,
}

impl Registration {
    /// Resolves once rebalancing asks this connection to move. The session then
    /// stops reading, waits (at most [`SETTLE`]) for the acks of the sends it
    /// accepted, and calls [`Registration::close`].
    pub async fn asked(&self) {
        self.asked.cancelled().await
    }

    /// Closes the connection with 4001 `rebalance`.
    pub fn close(&self, out: &Outbound) {
        if out.close(CLOSE_REBALANCE, REASON) {
            self.rebalancer.metrics.rebalance_closes.inc();
        }
    }
}

/// [`Registration::asked`], or never without rebalancing.
pub async fn asked(registration: Option<&Registration>) {
    match registration {
        Some(r) => r.asked().await,
        None => std::future::pending().await,
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.rebalancer.lock().remove(&self.conn);
    }
}

impl Rebalancer {
    pub fn new(config: RebalanceConfig, metrics: Arc<Metrics>) -> Rebalancer {
        Rebalancer {
            config,
            metrics,
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Candidate>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an open connection; it stays a candidate until the guard is dropped.
    pub fn register(self: &Arc<Self>, conn: u64, out: Outbound) -> Registration {
        let asked = CancellationToken::new();
        let candidate = Candidate {
            out,
            asked: asked.clone(),
        };
        self.lock().insert(conn, candidate);
        Registration {
            rebalancer: self.clone(),
            conn,
            asked,
        }
    }

    /// Reports and decides every interval until `shutdown`; then withdraws this
    /// instance's report, so the others stop counting it at once.
    pub async fn run(
        self: Arc<Self>,
        commands: Commands,
        node: String,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Connections already leaving (their handshake may take seconds) are gone.
            let local = self.lock().values().filter(|c| c.staying()).count();
            match self.report(&commands, &node, local).await {
                Ok(counts) => {
                    let n = excess(
                        local,
                        &counts,
                        self.config.tolerance,
                        self.config.max_closes,
                    );
                    if n > 0 {
                        let asked = self.shed(n);
                        tracing::info!(
                            local,
                            ?counts,
                            asked,
                            "rebalance: asked clients to reconnect elsewhere"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rebalance: connection counts not exchanged"),
            }
        }
        if let Err(e) = withdraw(&commands, std::slice::from_ref(&node)).await {
            tracing::debug!(error = %e, "rebalance: report not withdrawn (it expires)");
        }
    }

    /// Writes this instance's count and returns every live instance's, this
    /// one's included; drops the entries that expired.
    async fn report(
        &self,
        commands: &Commands,
        node: &str,
        local: usize,
    ) -> Result<Vec<usize>, RedisError> {
        let ttl = self.config.interval() * TTL_INTERVALS;
        let now = now_ms();
        let value = format!("{local} {}", now + ttl.as_millis() as u64);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(KEY, node, &value)
            .ignore()
            .pexpire(KEY, ttl.as_millis() as i64)
            .ignore()
            .hgetall(KEY);
        let (all,): (HashMap<String, String>,) = commands.pipeline(&pipe).await?;
        let mut counts = Vec::with_capacity(all.len());
        let mut expired = Vec::new();
        for (field, value) in all {
            match parse(&value) {
                Some((count, expiry)) if expiry > now => counts.push(count),
                _ => expired.push(field),
            }
        }
        if !expired.is_empty() {
            withdraw(commands, &expired).await?;
        }
        Ok(counts)
    }

    /// Asks up to `n` open connections to move; returns how many it asked.
    fn shed(&self, n: usize) -> usize {
        let connections = self.lock();
        let staying = connections.values().filter(|c| c.staying());
        staying.take(n).map(|c| c.asked.cancel()).count()
    }
}

/// Removes these instances' reports.
async fn withdraw(commands: &Commands, nodes: &[String]) -> Result<(), RedisError> {
    let mut hdel = redis::cmd("HDEL");
    hdel.arg(KEY).arg(nodes);
    commands
        .run(|mut c| {
            let hdel = &hdel;
            async move { hdel.query_async::<i64>(&mut c).await }
        })
        .await
        .map(drop)
}

/// `<count> <expiry ms>`; None for anything else (another writer's garbage is
/// treated as expired and removed).
fn parse(value: &str) -> Option<(usize, u64)> {
    let (count, expiry) = value.split_once(' ')?;
    Some((count.parse().ok()?, expiry.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_instance_above_the_tolerance_sheds_its_excess_over_the_mean() {
        // Alone: nothing to balance against.
        assert_eq!(excess(100, &[100], 0.2, 1000), 0);
        // 100 and 0: mean 50, threshold 60; close 50.
        assert_eq!(excess(100, &[100, 0], 0.2, 1000), 50);
        // The idle one sheds nothing.
        assert_eq!(excess(0, &[100, 0], 0.2, 1000), 0);
        // Within the tolerance: 55 <= 50 × 1.2.
        assert_eq!(excess(55, &[55, 45], 0.2, 1000), 0);
        // Rate-limited per interval.
        assert_eq!(excess(100, &[100, 0, 0], 0.2, 10), 10);
        // A mean that is not whole rounds up: 3 of mean 1.5 closes 1.
        assert_eq!(excess(3, &[3, 0], 0.2, 10), 1);
    }

    #[test]
    fn reports_parse_or_count_as_expired() {
        assert_eq!(parse("12 1700000000000"), Some((12, 1_700_000_000_000)));
        assert_eq!(parse("12"), None);
        assert_eq!(parse("x 1"), None);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let ok = RebalanceConfig {
            enabled: true,
            tolerance: 0.2,
            interval_secs: 10,
            max_closes: 100,
        };
        assert_eq!(ok.validate(true), Ok(()));
        assert!(ok.validate(false).unwrap_err().contains("--redis-url"));
        let bad = RebalanceConfig {
            tolerance: f64::NAN,
            ..ok.clone()
        };
        assert!(
            bad.validate(true)
                .unwrap_err()
                .contains("--rebalance-tolerance")
        );
        let bad = RebalanceConfig {
            max_closes: 0,
            ..ok
        };
        assert!(
            bad.validate(true)
                .unwrap_err()
                .contains("--rebalance-max-closes")
        );
    }
}
