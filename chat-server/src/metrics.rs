//! Prometheus metrics (prometheus-client), named as in docs/protocol.md.
//!
//! One registry per server instance, so two instances in one test process do not
//! share counters. Process RSS is read from /proc at scrape time rather than kept
//! up to date by a background task.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub messages_received: Counter,
    pub messages_delivered: Counter,
    pub persist_latency: Histogram,
    pub persist_batch: Histogram,
    errors: Family<CodeLabel, Counter>,
    pub slow_consumers: Counter,
    pub rebalance_closes: Counter,
    pub rooms_local: Gauge,
    resident_memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let connections_opened = Counter::default();
        let messages_received = Counter::default();
        let messages_delivered = Counter::default();
        let persist_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let persist_batch = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let errors = Family::<CodeLabel, Counter>::default();
        let slow_consumers = Counter::default();
        let rebalance_closes = Counter::default();
        let rooms_local = Gauge::default();
        let resident_memory = Gauge::default();
        registry.register(
            "chat_connections",
            "Live WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "chat_connections_opened",
            "WebSocket connections accepted since start",
            connections_opened.clone(),
        );
        registry.register(
            "chat_messages_received",
            "send frames accepted from clients",
            messages_received.clone(),
        );
        registry.register(
            "chat_messages_delivered",
            "message frames queued to local clients",
            messages_delivered.clone(),
        );
        registry.register(
            "chat_persist_latency_seconds",
            "Time from accept to commit in the history store",
            persist_latency.clone(),
        );
        registry.register(
            "chat_persist_batch_size",
            "Rows per group commit",
            persist_batch.clone(),
        );
        registry.register("chat_errors", "Error frames sent, by code", errors.clone());
        registry.register(
            "chat_slow_consumer_disconnects",
            "Connections closed with 4000 (slow consumer)",
            slow_consumers.clone(),
        );
        registry.register(
            "chat_rebalance_closes",
            "Connections closed with 4001 (rebalance) to move them to another instance",
            rebalance_closes.clone(),
        );
        registry.register(
            "chat_rooms_local",
            "Rooms with members on this instance (= broker subscriptions)",
            rooms_local.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            resident_memory.clone(),
        );
        for code in ErrorCode::ALL {
            // Pre-create every code so dashboards see zeros, not absent series.
            let _ = errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        Metrics {
            registry,
            connections,
            connections_opened,
            messages_received,
            messages_delivered,
            persist_latency,
            persist_batch,
            errors,
            slow_consumers,
            rebalance_closes,
            rooms_local,
            resident_memory,
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// VmRSS of this process, from /proc/self/status (Linux only).
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_documented_names() {
        let m = Metrics::new();
        m.error(ErrorCode::RateLimited);
        let text = m.render();
        for name in [
            "chat_connections ",
            "chat_connections_opened_total",
            "chat_messages_received_total",
            "chat_messages_delivered_total",
            "chat_persist_latency_seconds_bucket",
            "chat_persist_batch_size_bucket",
            "chat_errors_total{code=\"rate_limited\"} 1",
            "chat_slow_consumer_disconnects_total",
            "chat_rebalance_closes_total",
            "chat_rooms_local",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
