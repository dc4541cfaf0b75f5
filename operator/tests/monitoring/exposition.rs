//! The series names a `/metrics` exposition offers, from its `# TYPE` lines
//! and its samples.
//!
//! A family is named without its suffixes in OpenMetrics (`# TYPE
//! chat_errors counter`), but PromQL reads the series: `chat_errors_total`
//! for a counter, `_bucket`, `_count` and `_sum` for a histogram (and no bare
//! name). Deriving them from the TYPE lines also covers families that have no
//! sample yet, such as a labelled counter before its first increment.

use std::collections::BTreeSet;

/// Every series name `text` offers.
pub fn series_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_count", "_sum", "_created"],
                "summary" => &["", "_count", "_sum", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn derives_series_names_from_the_families() {
    let text = "# TYPE chat_connections gauge\nchat_connections 3\n\
        # TYPE chat_errors counter\n\
        # TYPE chat_persist_latency_seconds histogram\n\
        chat_persist_latency_seconds_sum 0.0\n# EOF\n";
    let names = series_names(text);
    for name in [
        "chat_connections",
        "chat_errors_total",
        "chat_persist_latency_seconds_bucket",
        "chat_persist_latency_seconds_count",
        "chat_persist_latency_seconds_sum",
    ] {
        assert!(names.contains(name), "{name} missing in {names:?}");
    }
    for name in [
        "chat_errors",
        "chat_connections_total",
        "chat_persist_latency_seconds",
    ] {
        assert!(!names.contains(name), "{name} is no series");
    }
}
