//! The operator's Prometheus metrics (`/metrics`).
//!
//! Three series answer "is the operator keeping up, and what is failing":
//! reconciles run, failures by bounded reason ([`crate::Error::metric_label`]),
//! and how long reconciles take.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

/// Reconcile metrics, registered once and shared by every reconcile.
#[derive(Clone)]
pub struct Metrics {
    runs: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            runs: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
        }
    }
}

impl Metrics {
    /// Registers the metrics under the `chatback_operator` prefix, with every
    /// failure reason at zero (an empty family is not exposed at all).
    pub fn register(self, registry: &mut Registry) -> Self {
        for reason in Error::METRIC_LABELS {
            let _ = self.failures.get_or_create(&ErrorLabels { reason });
        }
        let sub = registry.sub_registry_with_prefix("chatback_operator");
        sub.register("reconciliations", "Reconciliations run", self.runs.clone());
        sub.register(
            "reconciliation_errors",
            "Reconciliations that failed, by reason",
            self.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            self.duration.clone(),
        );
        self
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.runs.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                reason: error.metric_label(),
            })
            .inc();
    }
}

/// Observes the reconcile duration on drop, so early returns are measured too.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn every_failure_reason_is_exposed_before_it_happens() {
        let mut registry = Registry::default();
        let _metrics = Metrics::default().register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for reason in Error::METRIC_LABELS {
            assert!(
                out.contains(&format!(
                    "chatback_operator_reconciliation_errors_total{{reason=\"{reason}\"}} 0"
                )),
                "{reason} missing in {out}"
            );
        }
    }

    #[test]
    fn exposes_runs_errors_and_durations() {
        let mut registry = Registry::default();
        let metrics = Metrics::default().register(&mut registry);
        drop(metrics.reconcile_started());
        metrics.reconcile_failed(&Error::Input("x".into()));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("chatback_operator_reconciliations_total 1"),
            "{out}"
        );
        assert!(
            out.contains("chatback_operator_reconciliation_errors_total{reason=\"input\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("chatback_operator_reconcile_duration_seconds_count 1"),
            "{out}"
        );
    }
}
