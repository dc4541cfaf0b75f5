//! The metric names a PromQL expression (or a Grafana `label_values(...)`
//! variable query) reads.
//!
//! Not a PromQL parser: it skips what cannot hold a metric name (strings,
//! label matchers `{...}`, ranges `[...]`, numbers and durations, the label
//! lists of `by`/`without`/`on`/`ignoring`/`group_*`) and keeps every other
//! identifier that is not a keyword or a function call. That is enough for the
//! shipped rules and dashboard, and it errs towards reporting too much: an
//! identifier it does not understand is reported as a metric, and the check
//! then fails loudly instead of passing silently.

/// Words that are PromQL syntax, not metric names.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN",
];
/// Modifiers followed by a parenthesized list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` reads, in order of appearance, without repeats.
pub fn metric_names(expr: &str) -> Vec<String> {
    let expr = strip_label_values(expr.trim());
    let chars: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_quoted(&chars, i),
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            c if c.is_ascii_digit() || c == '.' => {
                // numbers and durations: 0.99, 5m, 1e3
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                let next = rest.chars().next();
                // `sum by (pod) (x)`: an aggregation whose modifier comes first
                let modified = ["by", "without"].iter().any(|m| {
                    rest.strip_prefix(m)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                });
                if LABEL_LISTS.contains(&word.as_str()) {
                    if next == Some('(') {
                        let open = i + chars[i..].iter().position(|&c| c == '(').unwrap_or(0);
                        i = skip_to(&chars, open, ')');
                    }
                } else if next == Some('(') || modified || KEYWORDS.contains(&word.as_str()) {
                    // a function or aggregation, or syntax
                } else if !names.contains(&word) {
                    names.push(word);
                }
            }
            // `$__rate_interval` and other Grafana variables outside strings
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Grafana's `label_values(EXPR, label)` reads EXPR; the label is no metric.
fn strip_label_values(expr: &str) -> &str {
    let Some(inner) = expr
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    else {
        return expr;
    };
    match inner.rfind(',') {
        Some(comma) if !inner[comma..].contains('}') => &inner[..comma],
        _ => inner,
    }
}

/// The index after the quoted string that starts at `start`.
fn skip_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the `close` that ends the block starting at `start`,
/// skipping quoted strings inside it (a matcher's value may hold `}`).
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_quoted(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

#[test]
fn finds_the_metrics_and_skips_labels_functions_and_numbers() {
    let expr = r#"histogram_quantile(0.99, sum by (namespace, le) (rate(chat_persist_latency_seconds_bucket{namespace="$ns", pod=~"a|b}"}[$__rate_interval] offset 5m)))
        / on (pod) group_left (code) chat_errors_total and bool up"#;
    assert_eq!(
        metric_names(expr),
        [
            "chat_persist_latency_seconds_bucket",
            "chat_errors_total",
            "up"
        ]
    );
}

#[test]
fn reads_recorded_names_and_grafana_variable_queries() {
    assert_eq!(
        metric_names("chatcluster:chat_connections:sum{chatcluster=\"demo\"}"),
        ["chatcluster:chat_connections:sum"]
    );
    assert_eq!(
        metric_names(r#"label_values(chat_connections{namespace="$namespace"}, chatcluster)"#),
        ["chat_connections"]
    );
    assert_eq!(
        metric_names("label_values(chat_connections, namespace)"),
        ["chat_connections"]
    );
}

#[test]
fn handles_compact_and_trailing_modifiers() {
    assert_eq!(
        metric_names("sum by(pod)(chat_connections) + sum(up) without (job)"),
        ["chat_connections", "up"]
    );
}
