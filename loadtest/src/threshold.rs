//! k6-style pass/fail rules: `--threshold 'delivery.p99<50ms'`.
//!
//! A rule is `METRIC OP VALUE`. Metric names are the ones in the summary (see
//! README "Thresholds"); they are checked when the command line is parsed, so
//! a typo fails at once instead of after a ten-minute run. Latencies need a
//! unit (`us`, `ms`, `s`) and are compared in milliseconds; counts take a plain
//! integer; rates a plain number per second; `cpu_percent` an optional `%`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
            Op::Ne => actual != limit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Milliseconds; the rule must give a unit.
    Latency,
    Count,
    /// Per second.
    Rate,
    Percent,
}

/// Latency histograms and the statistics each one reports.
pub const LATENCIES: [&str; 5] = ["connect", "ack", "delivery", "send_lag", "receive_lag"];
pub const STATS: [&str; 7] = ["min", "mean", "p50", "p90", "p99", "p99.9", "max"];
/// Plain counters of the summary.
pub const COUNTS: [&str; 31] = [
    "expected",
    "delivered",
    "missing",
    "duplicated",
    "out_of_order",
    "recovered",
    "unexpected",
    "lost_acked",
    "incomplete_members",
    "duplicate_acks",
    "seq_conflicts",
    "stamp_conflicts",
    "history_missing",
    "history_duplicated",
    "history_mismatched",
    "connected",
    "connect_errors",
    "reconnects",
    "reconnect_failures",
    "churn_joins",
    "churn_leaves",
    "churn_failures",
    "sent",
    "acked",
    "rejected",
    "unacked",
    "unsent",
    "after_window",
    "errors",
    "bad_frames",
    "foreign",
];
pub const RATES: [&str; 5] = [
    "offered_rate",
    "achieved_rate",
    "deliveries_per_sec",
    "deliveries_per_sec_peak",
    "deliveries_per_cpu_sec",
];
/// Families keyed by a code: `errors.rate_limited`, `closes.4000`.
pub const KEYED: [&str; 2] = ["errors.", "closes."];

/// The kind of a metric name, `None` if there is no such metric.
pub fn kind_of(metric: &str) -> Option<Kind> {
    if let Some((family, stat)) = metric.split_once('.')
        && LATENCIES.contains(&family)
    {
        return match stat {
            "count" | "lower_bounds" => Some(Kind::Count),
            s if STATS.contains(&s) => Some(Kind::Latency),
            _ => None,
        };
    }
    if COUNTS.contains(&metric)
        || KEYED
            .iter()
            .any(|p| metric.len() > p.len() && metric.starts_with(p))
    {
        Some(Kind::Count)
    } else if RATES.contains(&metric) {
        Some(Kind::Rate)
    } else if metric == "cpu_percent" {
        Some(Kind::Percent)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The rule as written.
    pub rule: String,
    pub metric: String,
    pub op: Op,
    /// In the metric's unit (ms for latencies).
    pub limit: f64,
}

/// The outcome of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub rule: String,
    pub metric: String,
    /// NaN when the metric has no value, written as JSON `null`.
    #[serde(deserialize_with = "nan_when_null")]
    pub actual: f64,
    pub passed: bool,
}

/// Reads back the `null` that serde_json writes for NaN.
fn nan_when_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Threshold {
    /// Value parser for `--threshold`.
    pub fn parse(rule: &str) -> Result<Self, String> {
        let compact: String = rule.chars().filter(|c| !c.is_whitespace()).collect();
        let (at, symbol, op) = Op::ALL
            .iter()
            .filter_map(|&(sym, op)| compact.find(sym).map(|at| (at, sym, op)))
            .min_by_key(|&(at, sym, _)| (at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| {
                format!(
                    "'{rule}' has no comparison; write e.g. 'delivery.p99<50ms' or 'missing==0'"
                )
            })?;
        let metric = &compact[..at];
        let value = &compact[at + symbol.len()..];
        let kind = kind_of(metric).ok_or_else(|| {
            format!(
                "unknown metric '{metric}' in '{rule}'; use <{}>.<{}|count|lower_bounds>, {}, {}, cpu_percent, errors.<code> or closes.<code>",
                LATENCIES.join("|"),
                STATS.join("|"),
                COUNTS.join(", "),
                RATES.join(", "),
            )
        })?;
        let limit = parse_limit(kind, value).map_err(|e| format!("'{rule}': {e}"))?;
        Ok(Self {
            rule: rule.trim().to_owned(),
            metric: metric.to_owned(),
            op,
            limit,
        })
    }

    pub fn check(&self, actual: f64) -> Verdict {
        Verdict {
            rule: self.rule.clone(),
            metric: self.metric.clone(),
            actual,
            // NaN: the metric has no value (a latency with no samples), which
            // no rule accepts.
            passed: !actual.is_nan() && self.op.holds(actual, self.limit),
        }
    }
}

fn parse_limit(kind: Kind, value: &str) -> Result<f64, String> {
    let number = |s: &str| -> Result<f64, String> {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("'{value}' is not a number"))
    };
    match kind {
        Kind::Latency => {
            let (digits, scale) = if let Some(v) = value.strip_suffix("ms") {
                (v, 1.0)
            } else if let Some(v) = value
                .strip_suffix("us")
                .or_else(|| value.strip_suffix("µs"))
            {
                (v, 1e-3)
            } else if let Some(v) = value.strip_suffix('s') {
                (v, 1e3)
            } else {
                return Err(format!("latency '{value}' needs a unit: us, ms or s"));
            };
            Ok(number(digits)? * scale)
        }
        Kind::Count => value
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| format!("'{value}' is not a whole number")),
        Kind::Rate => number(value.strip_suffix("/s").unwrap_or(value)),
        Kind::Percent => number(value.strip_suffix('%').unwrap_or(value)),
    }
}

/// Rules that apply unless the user sets a rule on the same metric: a run
/// passes only if everything planned happened, exactly once.
pub const DEFAULTS: [&str; 9] = [
    "missing==0",
    "duplicated==0",
    "out_of_order==0",
    "unacked==0",
    "unsent==0",
    "connect_errors==0",
    "duplicate_acks==0",
    "seq_conflicts==0",
    "stamp_conflicts==0",
];

/// The defaults that exist only for a protocol with acks (and seqs).
const ACK_DEFAULTS: [&str; 5] = [
    "unacked==0",
    "duplicate_acks==0",
    "seq_conflicts==0",
    "stamp_conflicts==0",
    "lost_acked==0",
];

/// Defaults added for a protocol without acks (`--protocol socketio`) when
/// messages are planned: with nothing acked, a run must at least deliver.
pub const NO_ACK_DEFAULTS: [&str; 1] = ["delivered>0"];

/// Defaults added by `--verify-history`.
pub const HISTORY_DEFAULTS: [&str; 3] = [
    "history_missing==0",
    "history_duplicated==0",
    "history_mismatched==0",
];

/// Metrics that have a value only with `--verify-history`.
pub fn needs_history(metric: &str) -> bool {
    metric.starts_with("history_")
}

/// What decides the default rules of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults {
    pub verify_history: bool,
    /// The protocol has no acks (`--protocol socketio`).
    pub no_acks: bool,
    /// Messages are planned (`--messages` above 0).
    pub messages: bool,
}

/// The rules a run is judged by: the user's, plus the defaults for metrics the
/// user did not mention ([`DEFAULTS`], and [`HISTORY_DEFAULTS`] when the
/// history is verified), plus `lost_acked==0`, which always applies. Without
/// acks the ack rules are left out (they would hold trivially) and
/// [`NO_ACK_DEFAULTS`] apply instead when messages are planned.
pub fn with_defaults(user: &[Threshold], defaults: Defaults) -> Vec<Threshold> {
    let mut rules = user.to_vec();
    let history: &[&str] = if defaults.verify_history {
        &HISTORY_DEFAULTS
    } else {
        &[]
    };
    let no_acks: &[&str] = if defaults.no_acks && defaults.messages {
        &NO_ACK_DEFAULTS
    } else {
        &[]
    };
    let all = DEFAULTS
        .iter()
        .chain(history)
        .chain(no_acks)
        .chain(&["lost_acked==0"])
        .filter(|rule| !(defaults.no_acks && ACK_DEFAULTS.contains(rule)));
    for default in all {
        let rule = Threshold::parse(default).expect("built-in rules parse");
        let overridden =
            rule.metric != "lost_acked" && user.iter().any(|t| t.metric == rule.metric);
        if !overridden && !user.contains(&rule) {
            rules.push(rule);
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_with_units() {
        let t = Threshold::parse("delivery.p99<50ms").unwrap();
        assert_eq!(
            (t.metric.as_str(), t.op, t.limit),
            ("delivery.p99", Op::Lt, 50.0)
        );
        assert_eq!(Threshold::parse("ack.p99.9 <= 1.5s").unwrap().limit, 1500.0);
        assert_eq!(Threshold::parse("connect.max<250us").unwrap().limit, 0.25);
        let t = Threshold::parse("missing==0").unwrap();
        assert_eq!((t.op, t.limit), (Op::Eq, 0.0));
        assert_eq!(
            Threshold::parse("errors.rate_limited!=0").unwrap().op,
            Op::Ne
        );
        assert_eq!(
            Threshold::parse("deliveries_per_sec>=1000/s")
                .unwrap()
                .limit,
            1000.0
        );
        assert_eq!(Threshold::parse("cpu_percent<80%").unwrap().limit, 80.0);
        assert_eq!(Threshold::parse("delivery.count>0").unwrap().op, Op::Gt);
    }

    #[test]
    fn rejects_bad_rules_clearly() {
        let err = |r| Threshold::parse(r).unwrap_err();
        assert!(err("delivery.p99").contains("no comparison"));
        assert!(err("delivery.p98<5ms").contains("unknown metric"));
        assert!(err("latency<5ms").contains("unknown metric"));
        assert!(err("delivery.p99<50").contains("needs a unit"));
        assert!(err("missing==zero").contains("not a whole number"));
        assert!(err("missing==1ms").contains("not a whole number"));
        assert!(err("delivery.p99<<5ms").contains("not a number"));
        assert!(err("errors.<5").contains("unknown metric"));
    }

    #[test]
    fn checks_compare_in_the_metric_unit() {
        let t = Threshold::parse("delivery.p99<50ms").unwrap();
        assert!(t.check(49.9).passed);
        assert!(!t.check(50.0).passed);
        let v = Threshold::parse("missing==0").unwrap().check(3.0);
        assert_eq!(
            (v.passed, v.actual, v.rule.as_str()),
            (false, 3.0, "missing==0")
        );
    }

    #[test]
    fn defaults_apply_unless_overridden() {
        let rules = |user: &[&str], verify_history: bool| -> Vec<String> {
            let user: Vec<_> = user.iter().map(|r| Threshold::parse(r).unwrap()).collect();
            let defaults = Defaults {
                verify_history,
                ..Defaults::default()
            };
            with_defaults(&user, defaults)
                .into_iter()
                .map(|t| t.rule)
                .collect()
        };
        let all: Vec<String> = DEFAULTS
            .iter()
            .chain(&["lost_acked==0"])
            .map(|r| r.to_string())
            .collect();
        assert_eq!(rules(&[], false), all);
        for required in ["unacked==0", "unsent==0", "connect_errors==0"] {
            assert!(all.iter().any(|r| r == required), "{required}");
        }
        let relaxed = rules(&["missing<10", "unsent<5"], false);
        assert_eq!(relaxed[..2], ["missing<10", "unsent<5"]);
        assert!(
            !relaxed
                .iter()
                .any(|r| r == "missing==0" || r == "unsent==0")
        );
        assert_eq!(relaxed.len(), all.len());
        let lost = rules(&["lost_acked<3"], false);
        assert_eq!(lost.first().map(String::as_str), Some("lost_acked<3"));
        assert_eq!(lost.last().map(String::as_str), Some("lost_acked==0"));
        assert_eq!(rules(&["missing==0"], false), all);
        let verified = rules(&[], true);
        assert_eq!(verified.len(), all.len() + HISTORY_DEFAULTS.len());
        assert!(verified.iter().any(|r| r == "history_missing==0"));
    }

    #[test]
    fn without_acks_a_run_must_deliver_instead() {
        let rules = |messages: bool| -> Vec<String> {
            let defaults = Defaults {
                no_acks: true,
                messages,
                ..Defaults::default()
            };
            with_defaults(&[], defaults)
                .into_iter()
                .map(|t| t.rule)
                .collect()
        };
        let socketio = rules(true);
        for ack_rule in ACK_DEFAULTS {
            assert!(!socketio.iter().any(|r| r == ack_rule), "{ack_rule}");
        }
        for kept in [
            "missing==0",
            "duplicated==0",
            "out_of_order==0",
            "unsent==0",
        ] {
            assert!(socketio.iter().any(|r| r == kept), "{kept}");
        }
        assert!(socketio.iter().any(|r| r == "delivered>0"));
        assert!(!rules(false).iter().any(|r| r == "delivered>0"));
    }
}
