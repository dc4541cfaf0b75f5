//! One result from the summaries of a run split over generators
//! (`--shard I/N`), as the chatback operator's ChatLoadTest does with its pods.
//!
//! Percentiles cannot be averaged, so every shard's summary carries its
//! HdrHistograms in the V2 format (base64), and the merged latencies are read
//! from the histograms added together. Counts (connections, messages,
//! deliveries, the delivery audit, errors, closes) are summed. The shards run
//! at the same time (a common start barrier), so rates are summed too; the
//! peak deliveries per second is the sum of the shards' peaks, an upper bound.
//! The thresholds are judged again on the merged result.
//!
//! The audit is each shard's own: a shard sees every message of its members'
//! rooms, so `expected`, `delivered`, `missing` and the other per-member counts
//! add up exactly. Checks that tie one client's ack to another client's
//! delivery (`lost_acked`, `seq_conflicts`, `stamp_conflicts`) only see pairs
//! within one shard; a message acked in one shard and missing only in another
//! counts as `missing` there, not as `lost_acked`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::audit::AuditReport;
use crate::history::HistoryReport;
use crate::recorder::{Recorder, bump, latency_histogram};
use crate::report::{LatencyStats, Summary, UrlLatencies};
use crate::threshold::Threshold;

/// The histograms of one shard, each in the HdrHistogram V2 format, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histograms {
    pub connect: String,
    pub ack: String,
    pub delivery: String,
    pub send_lag: String,
    pub receive_lag: String,
    pub same_instance: String,
    pub cross_instance: String,
    /// Per `--url`, in order.
    pub urls: Vec<UrlHistograms>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlHistograms {
    pub delivery: String,
    pub ack: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no shard results to merge")]
    Empty,
    #[error("shard {0}: the summary has no histograms (was it run with --shard?)")]
    NoHistograms(String),
    #[error("shard {shard}: histogram `{name}`: {reason}")]
    Histogram {
        shard: String,
        name: String,
        reason: String,
    },
    #[error("the results are not the shards of one run: {0}")]
    Mismatch(String),
}

impl Histograms {
    pub fn encode(r: &Recorder) -> Self {
        Self {
            connect: encode(&r.connect),
            ack: encode(&r.ack),
            delivery: encode(&r.delivery),
            send_lag: encode(&r.send_lag),
            receive_lag: encode(&r.receive_lag),
            same_instance: encode(&r.same_instance),
            cross_instance: encode(&r.cross_instance),
            urls: r
                .by_target
                .iter()
                .map(|t| UrlHistograms {
                    delivery: encode(&t.delivery),
                    ack: encode(&t.ack),
                })
                .collect(),
        }
    }
}

pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("a latency histogram serializes into memory");
    STANDARD.encode(bytes)
}

/// A histogram encoded by [`encode`].
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram V2: {e:?}"))
}

/// Adds encoded histograms into one with the recorder's bounds.
struct Adder<'a> {
    shard: &'a str,
}

impl Adder<'_> {
    fn add(&self, into: &mut Histogram<u64>, name: &str, text: &str) -> Result<(), MergeError> {
        let error = |reason: String| MergeError::Histogram {
            shard: self.shard.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let h = decode(text).map_err(error)?;
        into.add(&h)
            .map_err(|e| error(format!("out of range: {e:?}")))
    }
}

/// Merges the summaries of the `N` shards of one run (each exactly once) and
/// judges `rules` on the result. The merged summary has no histograms and no
/// shard.
pub fn merge(shards: &[Summary], rules: &[Threshold]) -> Result<Summary, MergeError> {
    check_shards(shards)?;
    let mut merged = shards[0].clone();
    let first = &shards[0];
    let names = [
        "connect",
        "ack",
        "delivery",
        "send_lag",
        "receive_lag",
        "same_instance",
        "cross_instance",
    ];
    let mut totals: Vec<Histogram<u64>> = names.iter().map(|_| latency_histogram()).collect();
    let mut urls: Vec<(Histogram<u64>, Histogram<u64>)> = first
        .run
        .urls
        .iter()
        .map(|_| (latency_histogram(), latency_histogram()))
        .collect();
    for (i, s) in shards.iter().enumerate() {
        let label = s.run.shard.clone().unwrap_or_default();
        let h = s
            .histograms
            .as_ref()
            .ok_or_else(|| MergeError::NoHistograms(label.clone()))?;
        let adder = Adder { shard: &label };
        let encoded = [
            &h.connect,
            &h.ack,
            &h.delivery,
            &h.send_lag,
            &h.receive_lag,
            &h.same_instance,
            &h.cross_instance,
        ];
        for ((total, name), text) in totals.iter_mut().zip(names).zip(encoded) {
            adder.add(total, name, text)?;
        }
        if h.urls.len() > urls.len() {
            return Err(MergeError::Mismatch(format!(
                "shard {label} has histograms for {} URLs, the run has {}",
                h.urls.len(),
                urls.len()
            )));
        }
        for (mine, theirs) in urls.iter_mut().zip(&h.urls) {
            adder.add(&mut mine.0, "urls.delivery", &theirs.delivery)?;
            adder.add(&mut mine.1, "urls.ack", &theirs.ack)?;
        }
        if i > 0 {
            add_counts(&mut merged, s);
        }
    }
    let l = &mut merged.latency_ms;
    let sum_lower = |pick: fn(&Summary) -> u64| shards.iter().map(pick).sum::<u64>();
    let [connect, ack, delivery, send_lag, receive_lag, same, cross] = &totals[..] else {
        unreachable!("one total per name")
    };
    l.connect = LatencyStats::from_histogram(connect, 0);
    l.ack = LatencyStats::from_histogram(ack, sum_lower(|s| s.latency_ms.ack.lower_bounds));
    l.delivery =
        LatencyStats::from_histogram(delivery, sum_lower(|s| s.latency_ms.delivery.lower_bounds));
    l.send_lag = LatencyStats::from_histogram(send_lag, 0);
    l.receive_lag = LatencyStats::from_histogram(receive_lag, 0);
    let b = &mut merged.breakdown;
    b.same_instance = LatencyStats::from_histogram(same, 0);
    b.cross_instance = LatencyStats::from_histogram(cross, 0);
    b.urls = first
        .run
        .urls
        .iter()
        .zip(&urls)
        .map(|(url, (delivery, ack))| UrlLatencies {
            url: url.clone(),
            delivery: LatencyStats::from_histogram(delivery, 0),
            ack: LatencyStats::from_histogram(ack, 0),
        })
        .collect();
    let g = &mut merged.generator;
    let cpu = g.cpu_user_s + g.cpu_system_s;
    g.deliveries_per_cpu_sec = if cpu > 0.0 {
        merged.deliveries.total as f64 / cpu
    } else {
        0.0
    };
    merged.run.shard = None;
    merged.histograms = None;
    merged.judge(rules);
    Ok(merged)
}

/// Every shard `0..N` of one run, exactly once.
fn check_shards(shards: &[Summary]) -> Result<(), MergeError> {
    let first = shards.first().ok_or(MergeError::Empty)?;
    let mut seen = vec![false; shards.len()];
    for s in shards {
        let label = s.run.shard.as_deref().unwrap_or("(none)");
        let parsed = s
            .run
            .shard
            .as_deref()
            .and_then(|text| crate::cli::Shard::parse(text).ok())
            .ok_or_else(|| MergeError::Mismatch(format!("'{label}' is not a shard I/N")))?;
        if parsed.count as usize != shards.len() {
            return Err(MergeError::Mismatch(format!(
                "shard {label} belongs to a run of {} shards, {} results were given",
                parsed.count,
                shards.len()
            )));
        }
        if std::mem::replace(&mut seen[parsed.index as usize], true) {
            return Err(MergeError::Mismatch(format!("shard {label} appears twice")));
        }
        if s.run.run_id != first.run.run_id || s.run.urls != first.run.urls {
            return Err(MergeError::Mismatch(format!(
                "shard {label} ran {} against {:?}, shard {} ran {} against {:?}",
                s.run.run_id,
                s.run.urls,
                first.run.shard.as_deref().unwrap_or_default(),
                first.run.run_id,
                first.run.urls
            )));
        }
    }
    Ok(())
}

/// Adds the counts of `s` to `into` (the latencies are taken from the merged
/// histograms afterwards).
fn add_counts(into: &mut Summary, s: &Summary) {
    let r = &mut into.run;
    r.clients += s.run.clients;
    r.started_at_unix_ms = r.started_at_unix_ms.min(s.run.started_at_unix_ms);
    r.elapsed_s = r.elapsed_s.max(s.run.elapsed_s);
    r.interrupted |= s.run.interrupted;

    let (c, o) = (&mut into.connections, &s.connections);
    c.attempted += o.attempted;
    c.connected += o.connected;
    c.failed += o.failed;
    add_map(&mut c.failures, &o.failures);
    c.reconnects += o.reconnects;
    c.reconnect_failures += o.reconnect_failures;
    c.churn_joins += o.churn_joins;
    c.churn_leaves += o.churn_leaves;
    c.churn_failures += o.churn_failures;

    let (m, o) = (&mut into.messages, &s.messages);
    m.planned += o.planned;
    m.sent += o.sent;
    m.unsent += o.unsent;
    m.after_window += o.after_window;
    m.acked += o.acked;
    m.rejected += o.rejected;
    m.unacked += o.unacked;
    m.offered_rate += o.offered_rate;
    m.achieved_rate += o.achieved_rate;

    let (d, o) = (&mut into.deliveries, &s.deliveries);
    d.total += o.total;
    d.per_sec += o.per_sec;
    d.peak_per_sec += o.peak_per_sec;
    d.presence += o.presence;
    d.foreign += o.foreign;
    d.bad_frames += o.bad_frames;

    add_audit(&mut into.audit, &s.audit);
    into.history = match (into.history.take(), &s.history) {
        (Some(mut h), Some(o)) => {
            add_history(&mut h, o);
            Some(h)
        }
        _ => None,
    };
    add_map(&mut into.errors, &s.errors);
    add_map(&mut into.closes, &s.closes);

    let (g, o) = (&mut into.generator, &s.generator);
    g.threads += o.threads;
    g.cpu_user_s += o.cpu_user_s;
    g.cpu_system_s += o.cpu_system_s;
    g.cpu_percent += o.cpu_percent;
    g.max_rss_bytes = g.max_rss_bytes.max(o.max_rss_bytes);
    g.nofile_limit = g.nofile_limit.min(o.nofile_limit);
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    from.iter().for_each(|(k, n)| bump(into, k, *n));
}

fn add_audit(into: &mut AuditReport, o: &AuditReport) {
    let AuditReport {
        members,
        expected,
        delivered,
        missing,
        duplicated,
        out_of_order,
        recovered,
        unexpected,
        incomplete_members,
        lost_acked,
        duplicate_acks,
        seq_conflicts,
        stamp_conflicts,
        delivery_lower_bounds,
    } = o;
    into.members += members;
    into.expected += expected;
    into.delivered += delivered;
    into.missing += missing;
    into.duplicated += duplicated;
    into.out_of_order += out_of_order;
    into.recovered += recovered;
    into.unexpected += unexpected;
    into.incomplete_members += incomplete_members;
    into.lost_acked += lost_acked;
    into.duplicate_acks += duplicate_acks;
    into.seq_conflicts += seq_conflicts;
    into.stamp_conflicts += stamp_conflicts;
    into.delivery_lower_bounds += delivery_lower_bounds;
}

fn add_history(into: &mut HistoryReport, o: &HistoryReport) {
    let HistoryReport {
        rooms,
        acked,
        stored,
        missing,
        duplicated,
        mismatched,
    } = o;
    into.rooms += rooms;
    into.acked += acked;
    into.stored += stored;
    into.missing += missing;
    into.duplicated += duplicated;
    into.mismatched += mismatched;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic latencies, µs: a long tail, as real ones have.
    fn samples() -> Vec<u64> {
        (0..20_000u64)
            .map(|i| 200 + (i * 7919) % 5_000 + if i % 97 == 0 { 250_000 } else { 0 })
            .collect()
    }

    #[test]
    fn v2_round_trip_keeps_every_count() {
        let mut h = latency_histogram();
        samples().iter().for_each(|&v| h.record(v).unwrap());
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert!(
            decode("AAAA")
                .unwrap_err()
                .contains("not an HdrHistogram V2")
        );
    }

    #[test]
    fn merged_percentiles_equal_those_of_one_histogram() {
        let all = samples();
        let mut whole = latency_histogram();
        all.iter().for_each(|&v| whole.record(v).unwrap());
        let mut merged = latency_histogram();
        for shard in 0..3 {
            let mut part = latency_histogram();
            all.iter()
                .skip(shard)
                .step_by(3)
                .for_each(|&v| part.record(v).unwrap());
            Adder { shard: "x" }
                .add(&mut merged, "delivery", &encode(&part))
                .unwrap();
        }
        assert_eq!(merged, whole);
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(merged.value_at_quantile(q), whole.value_at_quantile(q));
        }
    }
}
