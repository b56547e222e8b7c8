//! The Grafana dashboard, `deploy/grafana-dashboard.json`, against the
//! metrics the server exports (`src/metrics.rs`): it must import into any
//! Grafana (a `DS_PROMETHEUS` input, a uid, the `instance` variable), every
//! panel must say what it shows and query something, every metric a query
//! names must be one that `src/metrics.rs` describes, used as its type
//! allows (counters through `rate`, histograms through their `_bucket`
//! series), and every described metric must have a panel. A metric renamed,
//! removed or added in the code without the dashboard following fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const DASHBOARD: &str = include_str!("../deploy/grafana-dashboard.json");
const METRICS_RS: &str = include_str!("../src/metrics.rs");

/// What a `describe_*!` call declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric that `src/metrics.rs` describes: the first string literal
/// of each `describe_counter!(`, `describe_gauge!(` and
/// `describe_histogram!(` call.
fn described() -> BTreeMap<String, Kind> {
    let mut metrics = BTreeMap::new();
    for (call, kind) in [
        ("describe_counter!(", Kind::Counter),
        ("describe_gauge!(", Kind::Gauge),
        ("describe_histogram!(", Kind::Histogram),
    ] {
        for (at, _) in METRICS_RS.match_indices(call) {
            let args = &METRICS_RS[at + call.len()..];
            let (before, literal) = args
                .split_once('"')
                .unwrap_or_else(|| panic!("src/metrics.rs: {call} without a string literal"));
            assert!(
                before.trim().is_empty(),
                "src/metrics.rs: {call} does not start with the metric's name as a literal"
            );
            let name = literal.split('"').next().unwrap_or_default();
            let before = metrics.insert(name.to_owned(), kind);
            assert!(before.is_none(), "src/metrics.rs describes {name} twice");
        }
    }
    assert!(
        metrics.len() >= 20,
        "src/metrics.rs: only {} metrics found; did the describe calls change shape?",
        metrics.len()
    );
    metrics
}

/// The label names `src/metrics.rs` sets (`"kind" => kind`), and those
/// Prometheus adds (`instance`, `job`) or histograms have (`le`).
fn known_labels() -> BTreeSet<String> {
    let mut labels: BTreeSet<String> = ["instance", "job", "le"].map(str::to_owned).into();
    for (at, _) in METRICS_RS.match_indices("\" =>") {
        if let Some(open) = METRICS_RS[..at].rfind('"') {
            labels.insert(METRICS_RS[open + 1..at].to_owned());
        }
    }
    labels
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("deploy/grafana-dashboard.json is not JSON")
}

/// The panels that show data: every panel but rows, with the panels kept
/// inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("(untitled)")
}

/// Every target expression, with its panel's title.
fn exprs(dashboard: &Value) -> Vec<(&str, &str)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let targets = panel["targets"].as_array().into_iter().flatten();
            targets.filter_map(move |t| Some((title(panel), t["expr"].as_str()?)))
        })
        .collect()
}

/// The identifiers of `expr` that start with `quicmatch_` or `process_`,
/// outside string literals, with their byte offsets.
fn metric_tokens(expr: &str) -> Vec<(usize, &str)> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let (mut out, mut i) = (Vec::new(), 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b if ident(b) => {
                let start = i;
                while i < bytes.len() && ident(bytes[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                if word.starts_with("quicmatch_") || word.starts_with("process_") {
                    out.push((start, word));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// A series name as the metric it belongs to: a described histogram's
/// `_bucket`, `_sum` and `_count` series lose their suffix.
fn metric_of<'a>(series: &'a str, described: &BTreeMap<String, Kind>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && described.get(base) == Some(&Kind::Histogram)
        {
            return base;
        }
    }
    series
}

/// Every metric the panels query.
fn queried(dashboard: &Value, described: &BTreeMap<String, Kind>) -> BTreeSet<String> {
    exprs(dashboard)
        .into_iter()
        .flat_map(|(_, expr)| metric_tokens(expr))
        .map(|(_, series)| metric_of(series, described).to_owned())
        .collect()
}

fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "deploy/grafana-dashboard.json:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_extractor_finds_series_names_outside_strings() {
    let expr = r#"histogram_quantile(0.99, sum by (le, op) (rate(quicmatch_redis_call_seconds_bucket{instance=~"quicmatch_x"}[$__rate_interval]))) / process_open_fds"#;
    let names: Vec<&str> = metric_tokens(expr).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        ["quicmatch_redis_call_seconds_bucket", "process_open_fds"]
    );
    let described = described();
    assert_eq!(
        metric_of("quicmatch_redis_call_seconds_bucket", &described),
        "quicmatch_redis_call_seconds"
    );
    // Only histograms have these series.
    assert_eq!(
        metric_of("quicmatch_sessions_count", &described),
        "quicmatch_sessions_count"
    );
}

#[test]
fn dashboard_imports_into_any_grafana() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|input| input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS datasource input: {inputs:?}"
    );
    // The input is used: import replaces `${DS_PROMETHEUS}` with the chosen
    // data source, here the default of the `datasource` variable.
    let text = DASHBOARD.replace(char::is_whitespace, "");
    assert!(
        text.contains("\"${DS_PROMETHEUS}\""),
        "nothing refers to ${{DS_PROMETHEUS}}"
    );
    let uid = dashboard["uid"].as_str().unwrap_or_default();
    assert_eq!(uid, "quicmatch", "the dashboard's uid");
    assert!(dashboard["id"].is_null(), "an exported dashboard has no id");
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!(schema >= 38, "schemaVersion {schema} < 38");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let instance = variable("instance");
    assert_eq!(
        instance["query"]["query"], "label_values(quicmatch_sessions, instance)",
        "the instance variable's query"
    );
    assert_eq!(instance["multi"], true, "instance: several nodes at once");
    assert_eq!(instance["includeAll"], true, "instance: all nodes");
    // Without a custom "All" value Grafana lists the instances it found, so
    // `process_*` series of other jobs on the same Prometheus stay out.
    assert!(
        instance["allValue"].as_str().is_none_or(str::is_empty),
        "instance: a custom allValue would match other jobs' process_* series"
    );
}

#[test]
fn every_panel_has_a_title_a_description_a_unit_and_a_query() {
    let dashboard = dashboard();
    let panels = panels(&dashboard);
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = title(panel);
        if panel["title"].as_str().is_none_or(|t| t.trim().is_empty()) {
            problems.push(format!("a {} panel has no title", panel["type"]));
        }
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            problems.push(format!("{title}: no description"));
        }
        if !panel["id"].as_u64().is_some_and(|id| ids.insert(id)) {
            problems.push(format!("{title}: missing or repeated id"));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{title}: no unit"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{title}: not on the datasource variable"));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("{title}: no target"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problems.push(format!("{title}: a target without expr"));
            }
            if !target["refId"].as_str().is_some_and(|r| ref_ids.insert(r)) {
                problems.push(format!("{title}: missing or repeated refId"));
            }
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{title}: a target not on the datasource variable"));
            }
        }
    }
    fail_on(problems);
}

#[test]
fn queries_name_only_described_metrics() {
    let described = described();
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for (title, expr) in exprs(&dashboard) {
        let tokens = metric_tokens(expr);
        if tokens.is_empty() {
            problems.push(format!("{title}: `{expr}` queries no quicmatch metric"));
        }
        for (at, series) in tokens {
            let metric = metric_of(series, &described);
            let Some(&kind) = described.get(metric) else {
                problems.push(format!(
                    "{title}: {series} is not a metric src/metrics.rs describes"
                ));
                continue;
            };
            let before = expr[..at].trim_end();
            let in_rate = before.ends_with("rate(") || before.ends_with("increase(");
            match kind {
                Kind::Counter if !in_rate => {
                    problems.push(format!("{title}: counter {series} outside rate()"));
                }
                Kind::Gauge if in_rate => {
                    problems.push(format!("{title}: gauge {series} inside rate()"));
                }
                Kind::Histogram if series == metric => problems.push(format!(
                    "{title}: histogram {series} has no such series; use its _bucket, _sum or _count"
                )),
                Kind::Histogram if !in_rate => {
                    problems.push(format!("{title}: histogram series {series} outside rate()"));
                }
                _ => {}
            }
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for variable in variables {
        for (_, series) in variable["query"]["query"]
            .as_str()
            .map(metric_tokens)
            .unwrap_or_default()
        {
            if !described.contains_key(series) {
                problems.push(format!(
                    "variable {}: {series} is not described",
                    variable["name"]
                ));
            }
        }
    }
    fail_on(problems);
}

#[test]
fn queries_are_well_formed() {
    let labels = known_labels();
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for (title, expr) in exprs(&dashboard) {
        let open = expr.matches(['(', '{', '[']).count();
        let close = expr.matches([')', '}', ']']).count();
        if open != close {
            problems.push(format!("{title}: unbalanced brackets in `{expr}`"));
        }
        // Ranges follow the scrape interval Grafana knows of.
        for range in expr.split('[').skip(1) {
            if !range.starts_with("$__rate_interval]") {
                problems.push(format!(
                    "{title}: a range other than $__rate_interval in `{expr}`"
                ));
            }
        }
        // A quantile over the buckets of every selected node at once.
        for quantile in expr.split("histogram_quantile(").skip(1) {
            if !quantile.contains("sum by (le") || !quantile.contains("_bucket") {
                problems.push(format!(
                    "{title}: histogram_quantile without sum by (le, ...) of _bucket rates in `{expr}`"
                ));
            }
        }
        if metric_tokens(expr)
            .iter()
            .any(|(_, series)| !expr.contains(&format!("{series}{{instance=~\"$instance\"}}")))
        {
            problems.push(format!(
                "{title}: a series not filtered by $instance in `{expr}`"
            ));
        }
        // Grouping labels are ones the server sets.
        for grouping in expr.split("by (").skip(1) {
            let list = grouping.split(')').next().unwrap_or_default();
            for label in list.split(',').map(str::trim) {
                if !labels.contains(label) {
                    problems.push(format!("{title}: no metric has the label {label:?}"));
                }
            }
        }
    }
    fail_on(problems);
}

#[test]
fn every_described_metric_has_a_panel() {
    let described = described();
    let queried = queried(&dashboard(), &described);
    let missing: Vec<&String> = described
        .keys()
        .filter(|name| !queried.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "src/metrics.rs describes metrics no panel of deploy/grafana-dashboard.json shows: {missing:?}"
    );
}
