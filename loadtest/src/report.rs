//! The summary of a run: one serde struct that is both the `--json` document
//! (schema `chat-load/summary/v1`, documented field by field in the README)
//! and the source of the human table and of every threshold metric, so the
//! three can never disagree.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::audit::AuditReport;
use crate::history::HistoryReport;
use crate::merge::Histograms;
use crate::plan::Plan;
use crate::recorder::{Recorder, TargetLatency};
use crate::sysres::Usage;
use crate::threshold::{self, Threshold, Verdict};

pub const SCHEMA: &str = "chat-load/summary/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub run: RunInfo,
    pub connections: Connections,
    pub messages: Messages,
    pub deliveries: Deliveries,
    pub latency_ms: Latencies,
    /// The same latencies by instance, and delivery by path.
    pub breakdown: Breakdown,
    pub audit: AuditReport,
    /// `--verify-history`: the acked messages checked against the stored
    /// history (`null` without the flag).
    pub history: Option<HistoryReport>,
    /// `error` frames received, by `code`.
    pub errors: BTreeMap<String, u64>,
    /// Connection closes seen by clients, by close code (`abnormal`: dropped
    /// without a close frame; `1005`: close frame without a code).
    pub closes: BTreeMap<String, u64>,
    pub generator: Generator,
    pub thresholds: Vec<Verdict>,
    pub passed: bool,
    /// `--shard`: the HdrHistograms the latencies come from, for merging
    /// (absent without `--shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Histograms>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub urls: Vec<String>,
    pub clients: u32,
    pub rooms: u32,
    pub messages_per_client: u32,
    pub batch_size: u32,
    pub batch_interval_s: f64,
    /// `open` (fixed timetable) or `closed` (send after ack).
    pub mode: String,
    /// `native` or `socketio` (`--protocol`).
    pub protocol: String,
    pub rate_per_client: f64,
    pub body_size: usize,
    pub started_at_unix_ms: u64,
    pub elapsed_s: f64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// `--shard`: which share of the clients this generator ran, `I/N`
    /// (absent without `--shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// Failed first connections by reason.
    pub failures: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub reconnect_failures: u64,
    /// `--churn`: connections that joined, that left as planned, that failed.
    pub churn_joins: u64,
    pub churn_leaves: u64,
    pub churn_failures: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Messages {
    pub planned: u64,
    pub sent: u64,
    pub unsent: u64,
    pub after_window: u64,
    pub acked: u64,
    pub rejected: u64,
    pub unacked: u64,
    pub offered_rate: f64,
    pub achieved_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliveries {
    /// `message` frames received by all clients (duplicates included).
    pub total: u64,
    pub per_sec: f64,
    pub peak_per_sec: u64,
    pub presence: u64,
    pub foreign: u64,
    pub bad_frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latencies {
    pub connect: LatencyStats,
    pub ack: LatencyStats,
    pub delivery: LatencyStats,
    pub send_lag: LatencyStats,
    pub receive_lag: LatencyStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Breakdown {
    /// One per `--url`, in order.
    pub urls: Vec<UrlLatencies>,
    /// Deliveries whose sender and receiver were connected to one instance.
    pub same_instance: LatencyStats,
    /// Deliveries from a sender on another instance (the broker's path).
    pub cross_instance: LatencyStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlLatencies {
    pub url: String,
    /// Deliveries to the clients connected to this instance.
    pub delivery: LatencyStats,
    /// Acks to the senders connected to this instance.
    pub ack: LatencyStats,
}

/// Milliseconds, from a histogram of microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    /// Samples (included in `count`) that are lower bounds, run end − scheduled
    /// time, for messages that were never answered or delivered.
    pub lower_bounds: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl LatencyStats {
    pub fn from_histogram(h: &Histogram<u64>, lower_bounds: u64) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            lower_bounds,
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// A statistic by name; `None` for a latency of an empty histogram,
    /// which has no value (and so fails every rule on it).
    fn stat(&self, name: &str) -> Option<f64> {
        Some(match name {
            "count" => self.count as f64,
            "lower_bounds" => self.lower_bounds as f64,
            _ if self.count == 0 => return None,
            "min" => self.min,
            "mean" => self.mean,
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p99.9" => self.p99_9,
            "max" => self.max,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generator {
    pub threads: usize,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// CPU time over wall time; 100 = one core busy all the time.
    pub cpu_percent: f64,
    /// Deliveries received per second of generator CPU time: what one core
    /// of this generator can drive.
    pub deliveries_per_cpu_sec: f64,
    pub max_rss_bytes: u64,
    pub nofile_limit: u64,
}

/// Everything the summary is built from.
pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub recorder: &'a Recorder,
    pub audit: AuditReport,
    pub history: Option<HistoryReport>,
    pub usage: Usage,
    pub threads: usize,
    pub nofile_limit: u64,
    pub started_at_unix_ms: u64,
    pub elapsed_s: f64,
    pub interrupted: bool,
}

impl Summary {
    pub fn build(i: Inputs<'_>, rules: &[Threshold]) -> Self {
        let (plan, rec, c) = (i.plan, i.recorder, &i.recorder.counters);
        let period = plan.period().as_secs_f64();
        let rate = |n: u64, span: f64| {
            if n == 0 {
                0.0
            } else {
                n as f64 / (span + period)
            }
        };
        let cpu = i.usage.cpu().as_secs_f64();
        let mut summary = Summary {
            schema: SCHEMA.into(),
            run: RunInfo {
                run_id: plan.run_id.clone(),
                urls: plan
                    .targets
                    .iter()
                    .map(|t| t.endpoint.to_string())
                    .collect(),
                clients: plan.own_clients(),
                rooms: plan.rooms,
                messages_per_client: plan.messages,
                batch_size: plan.batch_size,
                batch_interval_s: plan.batch_interval.as_secs_f64(),
                mode: if plan.closed_loop { "closed" } else { "open" }.into(),
                protocol: plan.protocol.name().into(),
                rate_per_client: plan.rate,
                body_size: plan.body_size,
                started_at_unix_ms: i.started_at_unix_ms,
                elapsed_s: i.elapsed_s,
                interrupted: i.interrupted,
                shard: plan.shard.map(|s| s.to_string()),
            },
            connections: Connections {
                attempted: c.attempted,
                connected: c.connected,
                failed: c.attempted - c.connected,
                failures: rec.connect_errors.clone(),
                reconnects: c.reconnects,
                reconnect_failures: c.reconnect_failures,
                churn_joins: c.churn_joins,
                churn_leaves: c.churn_leaves,
                churn_failures: c.churn_failures,
            },
            messages: Messages {
                planned: plan.planned_messages(),
                sent: c.sent,
                unsent: plan
                    .planned_messages()
                    .saturating_sub(c.sent + c.after_window),
                after_window: c.after_window,
                acked: c.acked,
                rejected: c.rejected,
                // Without acks nothing is awaited: 0, not every send.
                unacked: match plan.protocol.acks() {
                    true => c.sent.saturating_sub(c.acked + c.rejected),
                    false => 0,
                },
                offered_rate: rate(c.sent, rec.scheduled.seconds()),
                achieved_rate: rate(c.sent, rec.written.seconds()),
            },
            deliveries: Deliveries {
                total: c.messages,
                per_sec: match rec.delivered.seconds() {
                    s if s > 0.0 => c.messages as f64 / s,
                    _ => 0.0,
                },
                peak_per_sec: rec.per_second.iter().copied().max().unwrap_or(0),
                presence: c.presence,
                foreign: c.foreign,
                bad_frames: c.bad_frames,
            },
            latency_ms: Latencies {
                connect: LatencyStats::from_histogram(&rec.connect, 0),
                ack: LatencyStats::from_histogram(&rec.ack, rec.ack_lower_bounds),
                delivery: LatencyStats::from_histogram(
                    &rec.delivery,
                    i.audit.delivery_lower_bounds,
                ),
                send_lag: LatencyStats::from_histogram(&rec.send_lag, 0),
                receive_lag: LatencyStats::from_histogram(&rec.receive_lag, 0),
            },
            breakdown: Breakdown {
                urls: plan
                    .targets
                    .iter()
                    .enumerate()
                    .map(|(index, target)| {
                        let of = |pick: fn(&TargetLatency) -> &Histogram<u64>| {
                            rec.by_target
                                .get(index)
                                .map(|t| LatencyStats::from_histogram(pick(t), 0))
                                .unwrap_or_default()
                        };
                        UrlLatencies {
                            url: target.endpoint.to_string(),
                            delivery: of(|t| &t.delivery),
                            ack: of(|t| &t.ack),
                        }
                    })
                    .collect(),
                same_instance: LatencyStats::from_histogram(&rec.same_instance, 0),
                cross_instance: LatencyStats::from_histogram(&rec.cross_instance, 0),
            },
            audit: i.audit,
            history: i.history,
            errors: rec.errors.clone(),
            closes: rec.closes.clone(),
            generator: Generator {
                threads: i.threads,
                cpu_user_s: i.usage.user.as_secs_f64(),
                cpu_system_s: i.usage.system.as_secs_f64(),
                cpu_percent: if i.elapsed_s > 0.0 {
                    100.0 * cpu / i.elapsed_s
                } else {
                    0.0
                },
                deliveries_per_cpu_sec: if cpu > 0.0 {
                    c.messages as f64 / cpu
                } else {
                    0.0
                },
                max_rss_bytes: i.usage.max_rss_bytes,
                nofile_limit: i.nofile_limit,
            },
            thresholds: Vec::new(),
            passed: true,
            histograms: plan.shard.map(|_| Histograms::encode(rec)),
        };
        summary.judge(rules);
        summary
    }

    /// Checks `rules` against this summary's metrics (replacing any verdicts).
    pub fn judge(&mut self, rules: &[Threshold]) {
        self.thresholds = rules
            .iter()
            .map(|rule| rule.check(self.metric(&rule.metric).unwrap_or(f64::NAN)))
            .collect();
        self.passed = self.thresholds.iter().all(|v| v.passed);
    }

    /// The value of a threshold metric (see `threshold::kind_of`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        if let Some(code) = name.strip_prefix("errors.") {
            return Some(self.errors.get(code).copied().unwrap_or(0) as f64);
        }
        if let Some(code) = name.strip_prefix("closes.") {
            return Some(self.closes.get(code).copied().unwrap_or(0) as f64);
        }
        if let Some((family, stat)) = name.split_once('.') {
            let l = &self.latency_ms;
            let stats = match family {
                "connect" => &l.connect,
                "ack" => &l.ack,
                "delivery" => &l.delivery,
                "send_lag" => &l.send_lag,
                "receive_lag" => &l.receive_lag,
                _ => return None,
            };
            return stats.stat(stat);
        }
        let (a, m, c, d, g) = (
            &self.audit,
            &self.messages,
            &self.connections,
            &self.deliveries,
            &self.generator,
        );
        let v = match name {
            "expected" => a.expected,
            "delivered" => a.delivered,
            "missing" => a.missing,
            "duplicated" => a.duplicated,
            "out_of_order" => a.out_of_order,
            "recovered" => a.recovered,
            "unexpected" => a.unexpected,
            "lost_acked" => a.lost_acked,
            "incomplete_members" => a.incomplete_members,
            "duplicate_acks" => a.duplicate_acks,
            "seq_conflicts" => a.seq_conflicts,
            "stamp_conflicts" => a.stamp_conflicts,
            "history_missing" => self.history.as_ref()?.missing,
            "history_duplicated" => self.history.as_ref()?.duplicated,
            "history_mismatched" => self.history.as_ref()?.mismatched,
            "connected" => c.connected,
            "connect_errors" => c.failed,
            "reconnects" => c.reconnects,
            "reconnect_failures" => c.reconnect_failures,
            "churn_joins" => c.churn_joins,
            "churn_leaves" => c.churn_leaves,
            "churn_failures" => c.churn_failures,
            "sent" => m.sent,
            "acked" => m.acked,
            "rejected" => m.rejected,
            "unacked" => m.unacked,
            "unsent" => m.unsent,
            "after_window" => m.after_window,
            "errors" => self.errors.values().sum(),
            "bad_frames" => d.bad_frames,
            "foreign" => d.foreign,
            "deliveries_per_sec_peak" => d.peak_per_sec,
            "offered_rate" => return Some(m.offered_rate),
            "achieved_rate" => return Some(m.achieved_rate),
            "deliveries_per_sec" => return Some(d.per_sec),
            "deliveries_per_cpu_sec" => return Some(g.deliveries_per_cpu_sec),
            "cpu_percent" => return Some(g.cpu_percent),
            _ => return None,
        };
        Some(v as f64)
    }

    /// The failed rules, for the exit message.
    pub fn failed(&self) -> Vec<&Verdict> {
        self.thresholds.iter().filter(|v| !v.passed).collect()
    }
}

fn count_map(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn human_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.1}")
    }
}

/// One row of the latency table.
fn latency_row(name: &str, s: &LatencyStats) -> String {
    format!(
        "{:<13}{:>10}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
        name, s.count, s.min, s.mean, s.p50, s.p90, s.p99, s.p99_9, s.max
    )
}

/// The human summary table.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, c, m, d, a, g) = (
            &self.run,
            &self.connections,
            &self.messages,
            &self.deliveries,
            &self.audit,
            &self.generator,
        );
        let mut out = String::new();
        let w = &mut out;
        writeln!(
            w,
            "chat-load {}: {} clients in {} rooms on {} {} instance(s), {} loop at {}/s per client, {:.1} s{}",
            r.run_id,
            r.clients,
            r.rooms,
            r.urls.len(),
            r.protocol,
            r.mode,
            r.rate_per_client,
            r.elapsed_s,
            if r.interrupted { " (interrupted)" } else { "" }
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "connections  attempted {}  connected {}  failed {} ({})  reconnects {}  reconnect failures {}",
            c.attempted,
            c.connected,
            c.failed,
            count_map(&c.failures),
            c.reconnects,
            c.reconnect_failures
        )?;
        if c.churn_joins + c.churn_failures > 0 {
            writeln!(
                w,
                "churn        joined {}  left {}  failed {}",
                c.churn_joins, c.churn_leaves, c.churn_failures
            )?;
        }
        writeln!(
            w,
            "messages     planned {}  sent {}  unsent {}  after window {}  acked {}  rejected {}  unacked {}",
            m.planned, m.sent, m.unsent, m.after_window, m.acked, m.rejected, m.unacked
        )?;
        writeln!(
            w,
            "             offered {}/s  achieved {}/s",
            human_rate(m.offered_rate),
            human_rate(m.achieved_rate)
        )?;
        writeln!(
            w,
            "deliveries   total {}  mean {}/s  peak {}/s  presence {}  foreign {}  bad frames {}",
            d.total,
            human_rate(d.per_sec),
            d.peak_per_sec,
            d.presence,
            d.foreign,
            d.bad_frames
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "{:<13}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency ms", "count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"
        )?;
        let l = &self.latency_ms;
        for (name, s) in [
            ("connect", &l.connect),
            ("ack", &l.ack),
            ("delivery", &l.delivery),
            ("send lag", &l.send_lag),
            ("receive lag", &l.receive_lag),
        ] {
            writeln!(w, "{}", latency_row(name, s))?;
        }
        let b = &self.breakdown;
        if b.urls.len() > 1 {
            for (i, u) in b.urls.iter().enumerate() {
                writeln!(w, "{}", latency_row(&format!("delivery @{i}"), &u.delivery))?;
                writeln!(w, "{}", latency_row(&format!("ack @{i}"), &u.ack))?;
            }
            writeln!(w, "{}", latency_row("same inst.", &b.same_instance))?;
            writeln!(w, "{}", latency_row("cross inst.", &b.cross_instance))?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "audit        members {}  expected {}  delivered {}  missing {}  duplicated {}  out of order {}",
            a.members, a.expected, a.delivered, a.missing, a.duplicated, a.out_of_order
        )?;
        writeln!(
            w,
            "             recovered {}  unexpected {}  incomplete members {}  lost acked {}",
            a.recovered, a.unexpected, a.incomplete_members, a.lost_acked
        )?;
        writeln!(
            w,
            "             duplicate acks {}  seq conflicts {}  stamp conflicts {}",
            a.duplicate_acks, a.seq_conflicts, a.stamp_conflicts
        )?;
        let bounds = (l.ack.lower_bounds, l.delivery.lower_bounds);
        if bounds != (0, 0) {
            writeln!(
                w,
                "             timed as lower bounds (run end - scheduled): {} acks, {} deliveries",
                bounds.0, bounds.1
            )?;
        }
        if let Some(h) = &self.history {
            writeln!(
                w,
                "history      acked {}  stored {}  missing {}  duplicated {}  mismatched {}",
                h.acked, h.stored, h.missing, h.duplicated, h.mismatched
            )?;
        }
        writeln!(w, "errors       {}", count_map(&self.errors))?;
        writeln!(w, "closes       {}", count_map(&self.closes))?;
        writeln!(
            w,
            "generator    cpu {:.1}% of one core (user {:.2} s, sys {:.2} s)  {} deliveries per cpu-second  rss {:.0} MiB  threads {}",
            g.cpu_percent,
            g.cpu_user_s,
            g.cpu_system_s,
            human_rate(g.deliveries_per_cpu_sec),
            g.max_rss_bytes as f64 / (1024.0 * 1024.0),
            g.threads
        )?;
        writeln!(w)?;
        writeln!(w, "thresholds")?;
        for v in &self.thresholds {
            let unit = match threshold::kind_of(&v.metric) {
                Some(threshold::Kind::Latency) => " ms",
                Some(threshold::Kind::Rate) => "/s",
                Some(threshold::Kind::Percent) => "%",
                _ => "",
            };
            let actual = match v.actual.is_nan() {
                true => "none (no samples)".to_owned(),
                false => format!("{}{unit}", v.actual),
            };
            writeln!(
                w,
                "  {}  {:<32} actual {actual}",
                if v.passed { "PASS" } else { "FAIL" },
                v.rule,
            )?;
        }
        let failed = self.failed();
        match failed.is_empty() {
            true => write!(w, "result: PASS")?,
            false => write!(
                w,
                "result: FAIL ({} of {} thresholds failed: {})",
                failed.len(),
                self.thresholds.len(),
                failed
                    .iter()
                    .map(|v| v.rule.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use crate::endpoint::Endpoint;
    use crate::plan::Target;
    use clap::Parser;

    fn summary(rules: &[&str]) -> Summary {
        let args = Args::try_parse_from([
            "chat-load",
            "--clients",
            "2",
            "--rooms",
            "1",
            "--messages",
            "1",
        ])
        .unwrap();
        let target = Target {
            endpoint: Endpoint::parse("ws://127.0.0.1:1/ws").unwrap(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let plan = Plan::new(&args, "t".into(), vec![target]);
        let mut recorder = Recorder::default();
        recorder.delivery.record(1_000).unwrap();
        recorder.counters.sent = 2;
        recorder.counters.acked = 2;
        recorder.error_frame("rate_limited");
        let audit = AuditReport {
            members: 2,
            expected: 4,
            delivered: 3,
            missing: 1,
            ..Default::default()
        };
        let rules: Vec<_> = rules.iter().map(|r| Threshold::parse(r).unwrap()).collect();
        Summary::build(
            Inputs {
                plan: &plan,
                recorder: &recorder,
                audit,
                history: None,
                usage: Usage::default(),
                threads: 1,
                nofile_limit: 1024,
                started_at_unix_ms: 0,
                elapsed_s: 1.0,
                interrupted: false,
            },
            &threshold::with_defaults(&rules, threshold::Defaults::default()),
        )
    }

    #[test]
    fn every_threshold_metric_has_a_value() {
        let s = summary(&[]);
        let mut names: Vec<String> = threshold::COUNTS
            .iter()
            .chain(&threshold::RATES)
            .map(|s| s.to_string())
            .collect();
        for family in threshold::LATENCIES {
            names.extend(
                threshold::STATS
                    .iter()
                    .chain(&["count"])
                    .map(|st| format!("{family}.{st}")),
            );
        }
        names.extend([
            "cpu_percent".into(),
            "errors.nope".into(),
            "closes.4000".into(),
        ]);
        for name in names {
            assert!(threshold::kind_of(&name).is_some(), "{name}");
            // Latencies of empty histograms and the history (not verified
            // here) have no value.
            let valueless = name.starts_with("history_")
                || (!name.starts_with("delivery.")
                    && threshold::kind_of(&name) == Some(threshold::Kind::Latency));
            assert_eq!(s.metric(&name).is_none(), valueless, "{name}");
        }
        assert_eq!(s.metric("errors.rate_limited"), Some(1.0));
        assert_eq!(s.metric("delivery.p99"), Some(1.0));
        assert_eq!(s.metric("nope"), None);
    }

    #[test]
    fn failed_thresholds_are_named() {
        let s = summary(&["delivery.p99<50ms", "delivery.max<0.5ms"]);
        assert!(!s.passed);
        let failed: Vec<_> = s.failed().iter().map(|v| v.rule.clone()).collect();
        assert_eq!(failed, ["delivery.max<0.5ms", "missing==0"]);
        let text = s.to_string();
        assert!(text.contains("FAIL  delivery.max<0.5ms"), "{text}");
        assert!(
            text.contains(
                "result: FAIL (2 of 12 thresholds failed: delivery.max<0.5ms, missing==0)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_latency_rule_on_an_empty_histogram_fails() {
        // The ack histogram has no samples: nothing was acked.
        let s = summary(&["ack.p99<50ms", "ack.max!=0ms", "ack.count==0"]);
        let verdict = |rule: &str| s.thresholds.iter().find(|v| v.rule == rule).unwrap();
        assert!(!verdict("ack.p99<50ms").passed);
        assert!(verdict("ack.p99<50ms").actual.is_nan());
        assert!(!verdict("ack.max!=0ms").passed);
        assert!(verdict("ack.count==0").passed, "a count is never empty");
        assert!(s.to_string().contains("FAIL  ack.p99<50ms"));
        assert!(s.to_string().contains("actual none (no samples)"));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(summary(&[])).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        // The full key set is checked end to end in tests/load.rs.
        assert_eq!(v["latency_ms"]["delivery"]["p99"], 1.0);
        assert_eq!(v["audit"]["missing"], 1);
        assert_eq!(v["thresholds"][0]["rule"], "missing==0");
        assert_eq!(v["passed"], false);
    }
}
