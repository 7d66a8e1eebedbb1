//! The chart's monitoring, checked without a cluster: the PrometheusRule's alerts
//! (`charts/signalman/files/prometheus-rules.yaml`, rendered by helm) pass `promtool check rules`
//! and the rule unit tests of `tests/rules/` (`promtool test rules`), and every metric the
//! alerts and the Grafana dashboard (`charts/signalman/dashboards/signalman.json`) query is one
//! the operator exports: the `# TYPE` lines of `signalman::metrics::Metrics`, encoded here.
//!
//! promtool is built by `tests/env/setup.sh` (scripts/test.sh runs it). Without it the promtool
//! test fails under CI (`CI=true`) and is skipped, saying so, elsewhere.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/signalman")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "signalman-monitoring-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

fn helm() -> Command {
    let bin = signalman_testenv::env_home().join("bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: run tests/env/setup.sh (scripts/test.sh does)",
        bin.display()
    );
    let home = scratch_dir("helm");
    let mut cmd = Command::new(bin);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// `helm template` of the chart as release `t` in namespace `ops`, with `--set`s (`--set-json`
/// for those starting with `json:`, e.g. a float).
fn render(sets: &[&str]) -> Vec<Value> {
    let mut cmd = helm();
    cmd.args(["template", "t"])
        .arg(chart_dir())
        .args(["--namespace", "ops"]);
    for s in sets {
        match s.strip_prefix("json:") {
            Some(json) => cmd.args(["--set-json", json]),
            None => cmd.args(["--set", s]),
        };
    }
    let out = cmd.output().expect("running helm");
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn only<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

/// The alerting rules of the PrometheusRule rendered with `sets` (and the rule enabled).
fn rendered_rules(sets: &[&str]) -> Value {
    let mut all = vec!["metrics.prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let objs = render(&all);
    only(&objs, "PrometheusRule")["spec"].clone()
}

fn alerts(spec: &Value) -> Vec<&Value> {
    spec["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

fn alert<'a>(spec: &'a Value, name: &str) -> &'a Value {
    alerts(spec)
        .into_iter()
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
}

// ------------------------------------------------------------------------- metric names

/// Every series name the operator's `/metrics` can show: from the `# TYPE` lines, with the
/// suffixes of each type (counter `_total`, histogram `_bucket`/`_sum`/`_count`, info `_info`).
fn exported_series_names() -> BTreeSet<String> {
    // A family is encoded once it has a series: record one of each.
    let m = signalman::metrics::Metrics::new();
    m.aws_call(
        "ssm",
        "SendAutomationSignal",
        "ok",
        std::time::Duration::from_millis(5),
    );
    m.reconcile_done("WorkflowSignal", std::time::Duration::from_millis(5));
    m.reconcile_error("WorkflowSignal");
    m.set_rate_limit("ssm", "SendAutomationSignal", 2.5);
    m.set_circuit("ssm", "eu-west-1", false);
    m.set_leader(true);
    let _in_flight = m.in_flight("AutomationSignal");
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    assert!(
        names.contains("signalman_signals_total"),
        "no # TYPE lines in:\n{text}"
    );
    names
}

/// Series Prometheus itself writes for every target.
const SYNTHETIC: &[&str] = &["up"];

const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "atan2",
];

/// Removes the spans between `open` and `close` (not nested), keeping the delimiters.
fn blank_between(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for c in s.chars() {
        if inside {
            if c == close {
                inside = false;
                out.push(c);
            }
        } else {
            out.push(c);
            if c == open {
                inside = true;
            }
        }
    }
    out
}

/// The metric names a PromQL expression selects: every identifier that is not a function or
/// aggregation (followed by `(`), a keyword, a label (inside `{}`, `by (…)`, `on (…)` …), a
/// string, a number or a duration.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = expr.to_string();
    for q in ['"', '\'', '`'] {
        s = blank_between(&s, q, q);
    }
    s = blank_between(&s, '{', '}');
    s = blank_between(&s, '[', ']');
    let chars: Vec<char> = s.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number (1e3, 0x1f, 0.99) or an `offset` duration (5m).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c == '$' {
            // A Grafana variable outside a string.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let rest: String = chars[j..].iter().take(8).collect();
            // A call, or an aggregation whose grouping comes first: `sum by (le) (…)`.
            let call = chars.get(j) == Some(&'(')
                || ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| r.starts_with([' ', '\t', '\n', '(']))
                });
            let lower = word.to_ascii_lowercase();
            if PROMQL_KEYWORDS.contains(&lower.as_str()) {
                // `by (a, b)`, `on (…)`, `group_left (…)`: a list of labels follows.
                skip_label_list = call;
            } else if !call {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_label_list {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_label_list = false;
        }
        i += 1;
    }
    names
}

/// Expressions naming a series the operator does not export, as "where: name".
fn unknown_metrics<'a>(exprs: impl IntoIterator<Item = (String, &'a str)>) -> Vec<String> {
    let exported = exported_series_names();
    let mut unknown = Vec::new();
    for (place, expr) in exprs {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric found in {expr:?}");
        for name in names {
            if !exported.contains(&name) && !SYNTHETIC.contains(&name.as_str()) {
                unknown.push(format!("{place}: {name} (in {expr})"));
            }
        }
    }
    unknown
}

#[test]
fn the_promql_reader_finds_metric_names_and_nothing_else() {
    let names = |e: &str| promql_metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, service) (rate(x_seconds_bucket{job=~"$job",a="b(c)"}[$__rate_interval])))"#
        ),
        ["x_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"sum(a_total{o="Throttled"}) / on (job) group_left (pod) sum without (x) (b) > bool 1e3 offset 5m"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names(r#"absent(up{job="j"}) or max(c) by (kind) == 0 and d unless e"#),
        ["c", "d", "e", "up"]
    );
    // And the check catches a name the operator does not export (a counter without _total, a
    // histogram without _bucket, a typo).
    let unknown = unknown_metrics([
        ("a".to_string(), "rate(signalman_signals[5m])"),
        ("b".to_string(), "signalman_aws_call_duration_seconds > 1"),
        ("c".to_string(), "signalman_leaders"),
        ("d".to_string(), "signalman_leader + up"),
    ]);
    assert_eq!(unknown.len(), 3, "{unknown:?}");
}

#[test]
fn the_operator_exports_what_the_alerts_and_dashboard_rely_on() {
    let exported = exported_series_names();
    for name in [
        "signalman_build_info",
        "signalman_signals_total",
        "signalman_signals_pending",
        "signalman_signals_oldest_pending_seconds",
        "signalman_reconcile_errors_total",
        "signalman_aws_calls_total",
        "signalman_aws_call_duration_seconds_bucket",
        "signalman_aws_rate_limit_per_second",
        "signalman_aws_circuit_open",
        "signalman_leader",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }
}

// ------------------------------------------------------------------------- dashboard

fn dashboard() -> Value {
    let path = chart_dir().join("dashboards/signalman.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reading the dashboard"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard (panels, rows' panels, template variables), with
/// where it is.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("a target without expr");
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            let q = q.expect("a query variable without a query");
            // Grafana's label_values(selector, label): the selector is the PromQL.
            let q = match q.trim().strip_prefix("label_values(") {
                Some(args) => args.rsplit_once(',').map_or(args, |(sel, _)| sel),
                None => q,
            };
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn the_dashboard_queries_only_metrics_the_operator_exports() {
    let d = dashboard();
    assert_eq!(d["uid"], "signalman");
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 15, "{queries:?}");
    let unknown = unknown_metrics(queries.iter().map(|(p, e)| (p.clone(), e.as_str())));
    assert!(
        unknown.is_empty(),
        "the dashboard queries series the operator does not export:\n  {}",
        unknown.join("\n  ")
    );
    // What people open it for: signals by outcome, pending and oldest age, AWS calls and
    // their latency, the rate limit, circuits, the leader and memory.
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, e)| promql_metric_names(e))
        .collect();
    for name in [
        "signalman_signals_total",
        "signalman_signals_pending",
        "signalman_signals_oldest_pending_seconds",
        "signalman_aws_calls_total",
        "signalman_aws_call_duration_seconds_bucket",
        "signalman_aws_rate_limit_per_second",
        "signalman_aws_circuit_open",
        "signalman_leader",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
    // Every query goes through the data source variable, and every panel has a unique id.
    let mut ids = BTreeSet::new();
    fn all_panels<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            all_panels(&p["panels"], out);
        }
    }
    let mut ps = Vec::new();
    all_panels(&d["panels"], &mut ps);
    for p in ps {
        assert!(ids.insert(p["id"].as_i64().expect("panel id")), "{p}");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
}

#[test]
fn the_dashboard_ships_as_a_sidecar_config_map_when_enabled() {
    let objs = render(&[]);
    assert!(objs.iter().all(|o| o["kind"] != "ConfigMap"));
    let objs = render(&["metrics.dashboard.enabled=true"]);
    let cm = only(&objs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "t-signalman-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "ops");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["signalman.json"].as_str().expect("data")).unwrap();
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap's JSON is not the file's"
    );
    let objs = render(&[
        "metrics.dashboard.enabled=true",
        "metrics.dashboard.namespace=grafana",
        "metrics.dashboard.labels.grafana_dashboard=null",
        "metrics.dashboard.labels.dashboards=signalman",
        "metrics.dashboard.annotations.grafana_folder=Operators",
    ]);
    let cm = only(&objs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "signalman");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Operators");
}

// ------------------------------------------------------------------------- alerts

const ALERTS: [&str; 6] = [
    "SignalmanDown",
    "SignalmanNoLeader",
    "SignalmanSignalPendingTooLong",
    "SignalmanCircuitOpen",
    "SignalmanThrottling",
    "SignalmanSignalsFailing",
];

#[test]
fn the_alerts_query_only_metrics_the_operator_exports() {
    let spec = rendered_rules(&[]);
    let rules = alerts(&spec);
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    let unknown = unknown_metrics(rules.iter().map(|r| {
        (
            format!("alert {}", r["alert"]),
            r["expr"].as_str().expect("expr"),
        )
    }));
    assert!(
        unknown.is_empty(),
        "the alerts query series the operator does not export:\n  {}",
        unknown.join("\n  ")
    );
    for r in &rules {
        let expr = r["expr"].as_str().unwrap();
        // Every selector is scoped to this release's job and namespace.
        let selectors = expr.matches('{').count();
        let scoped = expr
            .matches(r#"job="t-signalman-metrics",namespace="ops""#)
            .count();
        assert_eq!(selectors, scoped, "{}: {expr}", r["alert"]);
        let a = &r["annotations"];
        assert!(
            a["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            r["alert"]
        );
        assert!(
            a["description"].as_str().is_some_and(|s| s.len() > 100),
            "{}: the description names the fix",
            r["alert"]
        );
        assert!(a.get("runbook_url").is_none());
        assert!(matches!(
            r["labels"]["severity"].as_str(),
            Some("warning" | "critical")
        ));
    }
}

#[test]
fn the_prometheus_rule_is_off_by_default_and_follows_its_values() {
    assert!(render(&[]).iter().all(|o| o["kind"] != "PrometheusRule"));
    let objs = render(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.labels.release=prometheus",
    ]);
    let rule = only(&objs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["name"], "t-signalman");
    assert_eq!(rule["metadata"]["namespace"], "ops");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/instance"],
        "t"
    );
    let defaults = rule["spec"].clone();
    assert!(alert(&defaults, "SignalmanSignalPendingTooLong")["expr"]
        .as_str()
        .unwrap()
        .ends_with("> 1800"));

    let spec = rendered_rules(&[
        "metrics.prometheusRule.selector=job=\"signalman\"\\,cluster=\"eu\"",
        "metrics.prometheusRule.alertLabels.team=platform",
        "metrics.prometheusRule.runbookUrl=https://example.com/signalman/README.md",
        "metrics.prometheusRule.signalPendingTooLong.minutes=45",
        "json:metrics.prometheusRule.throttling.ratio=0.25",
        "metrics.prometheusRule.throttling.for=15m",
        "metrics.prometheusRule.circuitOpen.for=2m",
        "metrics.prometheusRule.signalsFailing.moreThan=3",
        "metrics.prometheusRule.signalsFailing.window=1h",
        "metrics.prometheusRule.noLeader.for=10m",
        "metrics.prometheusRule.noLeader.severity=page",
        "metrics.prometheusRule.down.for=1m",
    ]);
    let expr = |name: &str| alert(&spec, name)["expr"].as_str().unwrap().to_string();
    assert!(expr("SignalmanSignalPendingTooLong").ends_with("> 2700"));
    assert!(expr("SignalmanThrottling").ends_with("> 0.25"));
    assert!(expr("SignalmanSignalsFailing").contains("[1h]"));
    assert!(expr("SignalmanSignalsFailing").ends_with("> 3"));
    assert_eq!(alert(&spec, "SignalmanThrottling")["for"], "15m");
    assert_eq!(alert(&spec, "SignalmanCircuitOpen")["for"], "2m");
    assert_eq!(alert(&spec, "SignalmanNoLeader")["for"], "10m");
    assert_eq!(
        alert(&spec, "SignalmanNoLeader")["labels"]["severity"],
        "page"
    );
    assert_eq!(alert(&spec, "SignalmanDown")["for"], "1m");
    for r in alerts(&spec) {
        let name = r["alert"].as_str().unwrap();
        let e = r["expr"].as_str().unwrap();
        assert!(!e.contains("t-signalman-metrics"), "{name}: {e}");
        assert_eq!(
            e.matches('{').count(),
            e.matches(r#"job="signalman",cluster="eu""#).count(),
            "{name}: {e}"
        );
        assert_eq!(r["labels"]["team"], "platform", "{name}");
        assert_eq!(
            r["annotations"]["runbook_url"],
            format!(
                "https://example.com/signalman/README.md#{}",
                name.to_lowercase()
            )
        );
    }
}

#[test]
fn the_schema_refuses_bad_alert_values() {
    for bad in [
        "metrics.prometheusRule.throttling.ratio=2",
        "metrics.prometheusRule.signalPendingTooLong.minutes=0",
        "metrics.prometheusRule.circuitOpen.for=five minutes",
        "metrics.prometheusRule.runbookUrl=README.md",
        "metrics.prometheusRule.unknown=1",
        "metrics.dashboard.enabled=yes",
    ] {
        let out = helm()
            .args(["template", "t"])
            .arg(chart_dir())
            .args(["--set", bad])
            .output()
            .expect("running helm");
        assert!(!out.status.success(), "{bad} was accepted");
    }
}

#[test]
fn helm_lint_is_clean_with_the_rule_and_dashboard() {
    let out = helm()
        .args(["lint", "--strict"])
        .arg(chart_dir())
        .args([
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ])
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------------- promtool

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// `.env-cache/bin/promtool`, or `None` (the caller skips) when it is not built outside CI.
fn promtool() -> Option<PathBuf> {
    let bin = signalman_testenv::env_home().join("bin/promtool");
    if bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "{} is missing: build it with `bash tests/env/setup.sh` (scripts/test.sh does)",
        bin.display()
    );
    assert!(!in_ci(), "{why}");
    eprintln!("SKIPPED: promtool rule checks and tests: {why}");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Writes the rules rendered with `sets` as `dir/signalman-rules.yaml`.
fn write_rules(dir: &Path, sets: &[&str]) -> PathBuf {
    let path = dir.join("signalman-rules.yaml");
    let yaml = serde_norway::to_string(&rendered_rules(sets)).expect("rules as YAML");
    std::fs::write(&path, yaml).expect("writing the rules");
    path
}

#[test]
fn promtool_checks_and_unit_tests_the_alerts() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = scratch_dir("rules");
    // The rules as the chart renders them with its defaults, next to the unit tests, which
    // name them `signalman-rules.yaml` (release "t", namespace "ops").
    let rules = write_rules(&dir, &[]);
    let checked = run(Command::new(&promtool)
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .arg(&rules));
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(root().join("tests/rules")).expect("tests/rules") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".test.yaml") {
            std::fs::copy(&path, dir.join(&name)).expect("copying a rule test");
            tests.push(name);
        }
    }
    tests.sort();
    assert!(!tests.is_empty(), "no tests/rules/*.test.yaml");
    let tested = run(Command::new(&promtool)
        .current_dir(&dir)
        .args(["test", "rules"])
        .args(&tests));
    assert!(!tested.contains("FAILED"), "{tested}");
    // Every alert is tested.
    let text: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(dir.join(t)).unwrap())
        .collect();
    for name in ALERTS {
        assert!(
            text.contains(&format!("alertname: {name}")),
            "no promtool test of {name}"
        );
    }

    // Other values render rules promtool accepts too.
    let other = scratch_dir("rules-other");
    let rules = write_rules(
        &other,
        &[
            "metrics.prometheusRule.selector=job=~\"signalman.*\"",
            "metrics.prometheusRule.alertLabels.team=platform",
            "metrics.prometheusRule.runbookUrl=https://example.com/README.md",
            "metrics.prometheusRule.signalsFailing.window=1h",
            "json:metrics.prometheusRule.throttling.ratio=0.5",
        ],
    );
    run(Command::new(&promtool)
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .arg(&rules));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
