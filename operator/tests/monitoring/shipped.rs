//! What `k8s/monitoring/` ships, read back for the tests: the PodMonitors, the
//! recording rules (plain file and PrometheusRule), the prometheus-adapter
//! rules and the Grafana dashboard, and the check that every metric name they
//! read exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::promql::metric_names;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/monitoring")
}

pub fn path(file: &str) -> PathBuf {
    dir().join(file)
}

/// A YAML file of k8s/monitoring/ as JSON values, one per document.
pub fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"))
}

/// The first `podMetricsEndpoints` entry of a PodMonitor.
pub fn pod_endpoint(file: &str) -> Value {
    yaml(file)["spec"]["podMetricsEndpoints"][0].clone()
}

/// The prometheus-adapter rule that serves the custom metric `name`.
pub fn adapter_rule(name: &str) -> Value {
    let config = yaml("prometheus-adapter.yaml");
    config["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rule| rule["name"]["as"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("prometheus-adapter.yaml has no rule serving {name}"))
}

/// The adapter's metricsQuery as it runs for `pods` of `namespace`.
pub fn adapter_query(rule: &Value, series: &str, namespace: &str, pods: &[&str]) -> String {
    let template = rule["metricsQuery"].as_str().expect("metricsQuery");
    let matchers = format!(r#"namespace="{namespace}",pod=~"{}""#, pods.join("|"));
    template
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", &matchers)
        .replace("<<.GroupBy>>", "pod")
}

/// Every PromQL expression of a Grafana dashboard: panel targets and
/// variable queries, each with where it is.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((
                    format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                    expr.to_string(),
                ));
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"]
            .as_str()
            .or(var["definition"].as_str());
        if var["type"] == "query"
            && let Some(query) = query
        {
            exprs.push((
                format!("variable {:?}", var["name"].as_str().unwrap_or("?")),
                query.to_string(),
            ));
        }
    }
    exprs
}

/// Every expression of the recording rules, and the names they record.
pub fn rules_exprs(rules: &Value) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["record"]
                .as_str()
                .or(rule["alert"].as_str())
                .unwrap_or("?");
            if let Some(record) = rule["record"].as_str() {
                recorded.insert(record.to_string());
            }
            let expr = rule["expr"].as_str().unwrap_or_default();
            exprs.push((format!("rule {name}"), expr.to_string()));
        }
    }
    (exprs, recorded)
}

/// Problems with the names `dashboard`, the recording rules and the adapter
/// rules read, given the series names the running processes expose: each
/// names the place and the metric that does not exist.
pub fn unknown_metrics(dashboard: &Value, exposed: &BTreeSet<String>) -> Vec<String> {
    let (rule_exprs, recorded) = rules_exprs(&yaml("recording-rules.yaml"));
    let mut adapter = Vec::new();
    for rule in yaml("prometheus-adapter.yaml")["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let series = rule["seriesQuery"].as_str().unwrap_or_default();
        adapter.push(("adapter seriesQuery".to_string(), series.to_string()));
        for name in metric_names(series) {
            adapter.push((
                "adapter metricsQuery".to_string(),
                adapter_query(rule, &name, "ns", &["pod"]),
            ));
        }
    }
    let known: BTreeSet<&String> = exposed.iter().chain(&recorded).collect();
    let mut problems = Vec::new();
    let checked = dashboard_exprs(dashboard)
        .into_iter()
        .map(|(place, expr)| (format!("grafana-dashboard.json {place}"), expr))
        .chain(
            rule_exprs
                .into_iter()
                .map(|(place, expr)| (format!("recording-rules.yaml {place}"), expr)),
        )
        .chain(
            adapter
                .into_iter()
                .map(|(place, expr)| (format!("prometheus-adapter.yaml {place}"), expr)),
        );
    for (place, expr) in checked {
        let names = metric_names(&expr);
        if names.is_empty() {
            problems.push(format!("{place}: reads no metric: {expr}"));
        }
        for name in names {
            if !known.contains(&name) {
                problems.push(format!("{place}: no metric {name:?} is exposed ({expr})"));
            }
        }
    }
    problems
}
