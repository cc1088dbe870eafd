//! The operators' contract, checked against a real `fjord node` process
//! after a little traffic: every metric the Grafana dashboard
//! (`grafana/dashboards/fjord.json`) queries is exported, so no panel is
//! silently empty; every exported name follows Prometheus' naming rules
//! and has a `# HELP` line; and README's "Metrics" section lists every
//! exported name.
//!
//! The dashboard's PromQL is read with a small tokenizer rather than a
//! regular expression over the text, so that functions (`rate`), keywords
//! (`by`, `on`, `and`), label names and values, durations and Grafana
//! variables are never taken for metric names; its own tests below show
//! that it tells them apart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::bin::{cluster_status, run_with_input, FJORD};

/// Queried by the dashboard but not exported by a single node, each for a
/// reason a single node cannot change.
const NOT_FROM_A_SINGLE_NODE: &[(&str, &str)] = &[
    (
        "up",
        "Prometheus' own per-target series, never exported by a target",
    ),
    (
        "fjord_partition_isr_shrinks_total",
        "counts ISR changes, which need a follower: at least two brokers",
    ),
    (
        "fjord_partition_isr_expands_total",
        "counts ISR changes, which need a follower: at least two brokers",
    ),
];

const DASHBOARD: &str = "grafana/dashboards/fjord.json";
const TOPIC: &str = "dashboard-traffic";
const GROUP: &str = "dashboard-group";
const RECORDS: usize = 30;

// ---------------------------------------------------------------------
// PromQL: the metric names an expression selects.

/// PromQL keywords and binary operators spelled as words.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Skips a quoted string starting at `chars[i]` (the quote); returns the
/// index past its closing quote.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Skips from an opening bracket at `chars[i]` to past its matching close,
/// ignoring brackets inside strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Whether the word at `chars[i]` is `by` or `without`, which only follow
/// an aggregation operator's name.
fn is_grouping_keyword(chars: &[char], i: usize) -> bool {
    let mut end = i;
    while end < chars.len() && is_ident_char(chars[end]) {
        end += 1;
    }
    let word: String = chars[i..end].iter().collect();
    matches!(word.to_ascii_lowercase().as_str(), "by" | "without")
}

/// The metric names `expr` selects: identifiers that are not functions,
/// aggregations, keywords, label names (in `{...}` or after `by`/`on`...),
/// numbers, durations or Grafana variables (`$x`, `${x}`, `[[x]]`).
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            // Label matchers.
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            // A range or subquery (durations), or a Grafana `[[var]]`.
            i = skip_group(&chars, i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}');
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including 1e3, 0x1f and durations after `offset`.
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
                // An operator or modifier: nothing to record.
            } else if chars.get(next) == Some(&'(') || is_grouping_keyword(&chars, next) {
                // A function, or an aggregation: `sum (...)`, `sum by (a) (...)`.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL expression in the dashboard: each panel target's `expr`,
/// and the selector inside each query variable's `label_values(...)`.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    if key == "expr" {
                        if let Some(s) = value.as_str() {
                            out.push(s.to_string());
                        }
                    }
                    walk(value, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        exprs.push(grafana_variable_selector(query));
    }
    exprs
}

/// `label_values(selector, label)` -> `selector`; other variable queries
/// (`query_result(expr)`) -> their expression.
fn grafana_variable_selector(query: &str) -> String {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        // The label is after the last comma outside braces and quotes.
        let chars: Vec<char> = inner.chars().collect();
        let mut i = 0;
        let mut last_comma = None;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(&chars, i);
                    continue;
                }
                '{' => {
                    i = skip_group(&chars, i, '{', '}');
                    continue;
                }
                ',' => last_comma = Some(i),
                _ => {}
            }
            i += 1;
        }
        return match last_comma {
            Some(at) => chars[..at].iter().collect(),
            // `label_values(label)`: no selector.
            None => String::new(),
        };
    }
    query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or(query)
        .to_string()
}

// ---------------------------------------------------------------------
// The exposition format and Prometheus' naming rules.

#[derive(Default)]
struct Exposition {
    /// `# TYPE` lines: family name -> counter, gauge, histogram, summary...
    types: BTreeMap<String, String>,
    help: BTreeSet<String>,
    /// Names on sample lines (`x_bucket`, `x_sum`, `x_count` included).
    samples: BTreeSet<String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                e.types.insert(name.to_string(), kind.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(name) = rest.split_whitespace().next() {
                e.help.insert(name.to_string());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            e.samples.insert(line[..end].to_string());
        }
    }
    e
}

/// Unit spellings Prometheus asks to replace by the base unit
/// (`_seconds`, `_bytes`), or that are no unit at all.
const NON_BASE_UNITS: &[&str] = &[
    "ms",
    "msec",
    "millis",
    "milliseconds",
    "us",
    "usec",
    "micros",
    "microseconds",
    "ns",
    "nanos",
    "nanoseconds",
    "secs",
    "sec",
    "minutes",
    "mins",
    "hours",
    "days",
    "kb",
    "kib",
    "mb",
    "mib",
    "gb",
    "gib",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "bits",
    "percent",
];

/// Every way the exposition breaks the naming rules, one line each.
fn naming_violations(e: &Exposition) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, kind) in &e.types {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(is_ident_start) && chars.all(is_ident_char);
        if !valid {
            bad.push(format!("{name}: not [a-zA-Z_:][a-zA-Z0-9_:]*"));
        }
        if !(name.starts_with("fjord_") || name.starts_with("process_")) {
            bad.push(format!("{name}: fjord's metrics start with fjord_"));
        }
        match (kind.as_str(), name.ends_with("_total")) {
            ("counter", false) => bad.push(format!("{name}: a counter must end in _total")),
            ("counter", true) => {}
            (_, true) => bad.push(format!("{name}: a {kind} must not end in _total")),
            _ => {}
        }
        // The series suffixes of histograms and summaries (promtool's
        // `check metrics` says the same).
        let series_suffix = ["_count", "_sum", "_bucket"]
            .into_iter()
            .find(|s| name.ends_with(s));
        if let (Some(suffix), false) = (
            series_suffix,
            matches!(kind.as_str(), "histogram" | "summary"),
        ) {
            bad.push(format!(
                "{name}: a {kind} must not end in {suffix}, a histogram's series suffix"
            ));
        }
        for word in name.split('_') {
            if NON_BASE_UNITS.contains(&word.to_ascii_lowercase().as_str()) {
                bad.push(format!(
                    "{name}: unit `{word}` is not a base unit (use _seconds, _bytes)"
                ));
            }
        }
        if !e.help.contains(name) {
            bad.push(format!("{name}: no # HELP line"));
        }
    }
    for sample in &e.samples {
        let family = [
            sample.as_str(),
            sample.strip_suffix("_bucket").unwrap_or(""),
            sample.strip_suffix("_sum").unwrap_or(""),
            sample.strip_suffix("_count").unwrap_or(""),
        ]
        .into_iter()
        .any(|f| e.types.contains_key(f));
        if !family {
            bad.push(format!("{sample}: a sample without a # TYPE line"));
        }
    }
    bad
}

/// Metric names in README's "## Metrics" section (up to the next `## `).
fn readme_metric_names(readme: &str) -> BTreeSet<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Metrics"))
        .unwrap_or_default();
    section
        .split(|c: char| !is_ident_char(c))
        .filter(|w| w.starts_with("fjord_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------
// A real node, a little traffic, a scrape.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// A `fjord node` process; killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
    bootstrap: String,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kafka, controller, metrics_port) = (free_port(), free_port(), free_port());
        let log = dir.path().join("node.log");
        let logfile = std::fs::File::create(&log).expect("node log");
        let overrides = [
            format!("listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}"),
            format!("advertised.listeners=PLAINTEXT://127.0.0.1:{kafka}"),
            format!("controller.quorum.voters=1@127.0.0.1:{controller}"),
            format!("fjord.metrics.listen=127.0.0.1:{metrics_port}"),
        ];
        let mut cmd = Command::new(FJORD);
        cmd.args(["node", "--node-id", "1", "--data-dir"])
            .arg(dir.path().join("data"));
        for o in &overrides {
            cmd.args(["-o", o]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("node log"))
            .stderr(logfile)
            .spawn()
            .expect("start fjord node");
        Node {
            child,
            log,
            bootstrap: format!("127.0.0.1:{kafka}"),
            metrics_port,
            _dir: dir,
        }
    }

    /// The body of `GET /metrics`, if the node answers.
    fn scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200");
        ok.then(|| body.to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn fjord(&self, args: &[&str], input: &str) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--bootstrap-server", self.bootstrap.as_str()]);
        run_with_input(&all, input)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(
    what: &str,
    deadline: Duration,
    node: &Node,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}\nnode log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of the samples of `name` whose line contains `labels`; `None`
/// when there is none.
fn sample_sum(scrape: &str, name: &str, labels: &str) -> Option<f64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Topic, produce with acks=all, a group member that reads and commits, a
/// refused request and a malformed frame: something for every panel.
fn drive_traffic(node: &Node) {
    wait_for(
        "the node's broker to be active",
        Duration::from_secs(60),
        node,
        || {
            let status = cluster_status(&node.bootstrap)?;
            let active = status["brokers"]
                .as_array()?
                .iter()
                .any(|b| b["state"] == "active");
            active.then_some(())
        },
    );
    let out = node.fjord(&["topic", "create", TOPIC, "--partitions", "2"], "");
    assert_success(&out, "topic create");
    // Refused (TopicAlreadyExists): a request error for the error panel.
    let again = node.fjord(&["topic", "create", TOPIC, "--partitions", "2"], "");
    assert!(!again.status.success(), "a second create must be refused");

    let lines: String = (0..RECORDS)
        .map(|i| format!("key-{i}:value {i}\n"))
        .collect();
    let out = node.fjord(
        &["produce", TOPIC, "--acks", "all", "--key-separator", ":"],
        &lines,
    );
    assert_success(&out, "produce");

    // Reads half and commits them, so the group has lag to show.
    let half = (RECORDS / 2).to_string();
    let out = node.fjord(
        &[
            "consume",
            TOPIC,
            "--group",
            GROUP,
            "--from-beginning",
            "--max-messages",
            &half,
        ],
        "",
    );
    let consumed = assert_success(&out, "consume --group");
    assert_eq!(consumed.lines().count(), RECORDS / 2, "{consumed}");

    // A frame too short to hold a request header.
    let mut s = TcpStream::connect(&node.bootstrap).expect("connect to the kafka listener");
    s.write_all(&[0, 0, 0, 1, 0])
        .expect("send a malformed frame");
    let _ = s.read(&mut [0u8; 16]);
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn a_live_node_exports_every_dashboard_metric_under_prometheus_names() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file(DASHBOARD)).expect("the dashboard is JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() > 20, "the dashboard's queries were not found");
    let mut queried: BTreeMap<String, String> = BTreeMap::new();
    for expr in &exprs {
        for name in promql_metric_names(expr) {
            queried.entry(name).or_insert_with(|| expr.clone());
        }
    }

    let node = Node::start();
    drive_traffic(&node);
    // Counters and gauges set on the produce, fetch and group paths, the
    // partition sizes from the next maintenance pass, and the group lag
    // from the coordinator's next tick.
    let scrape = wait_for(
        "the traffic to show in /metrics",
        Duration::from_secs(60),
        &node,
        || {
            let s = node.scrape()?;
            let topic = format!("topic=\"{TOPIC}\"");
            let group = format!("group=\"{GROUP}\"");
            let produced = sample_sum(&s, "fjord_log_appended_records_total", "")?;
            let lag = sample_sum(&s, "fjord_group_lag", &group)?;
            let size = sample_sum(&s, "fjord_log_size_bytes", &topic)?;
            (produced >= RECORDS as f64 && lag > 0.0 && size > 0.0).then_some(s)
        },
    );
    let exposition = parse_exposition(&scrape);

    // (a) Every metric the dashboard queries is exported.
    let allowed: BTreeMap<&str, &str> = NOT_FROM_A_SINGLE_NODE.iter().copied().collect();
    let missing: Vec<String> = queried
        .iter()
        .filter(|(name, _)| !exposition.samples.contains(*name))
        .filter(|(name, _)| !allowed.contains_key(name.as_str()))
        .map(|(name, expr)| format!("{name} (in `{expr}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the node does not export:\n  {}\n\nexported:\n{scrape}",
        missing.join("\n  ")
    );
    for name in allowed.keys() {
        assert!(
            queried.contains_key(*name),
            "{name} is allowed to be missing but the dashboard does not query it: drop it from the list"
        );
    }

    // (b) and (c): naming rules, HELP lines.
    let violations = naming_violations(&exposition);
    assert!(
        violations.is_empty(),
        "exported names break Prometheus' rules:\n  {}",
        violations.join("\n  ")
    );

    // README's table names every exported metric.
    let documented = readme_metric_names(&repo_file("README.md"));
    let undocumented: Vec<&String> = exposition
        .types
        .keys()
        .filter(|name| !documented.contains(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "README.md's Metrics section does not list {undocumented:?}"
    );
}

#[test]
fn promql_names_are_told_from_functions_keywords_labels_and_variables() {
    let names = |e: &str| -> Vec<String> { promql_metric_names(e).into_iter().collect() };
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (api, le) (rate(fjord_kafka_request_duration_seconds_bucket{instance=~\"$instance\"}[$__rate_interval])))"
        ),
        ["fjord_kafka_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names("max by (voter) (fjord_raft_voter_lag_entries and on (instance) (fjord_raft_is_leader == 1))"),
        ["fjord_raft_is_leader", "fjord_raft_voter_lag_entries"]
    );
    assert_eq!(
        names("sum without(partition) (fjord_group_lag{topic=\"a}b\",group!~'x(y)'}) / ignoring(group) group_left(topic) fjord_x offset 5m"),
        ["fjord_group_lag", "fjord_x"]
    );
    assert_eq!(
        names("time() - process_start_time_seconds{instance=~\"${instance:regex}\"} > bool 1e3"),
        ["process_start_time_seconds"]
    );
    assert_eq!(
        names("topk(20, sum(rate(a:b_total[5m:30s])) BY (topic)) unless up[[interval]]"),
        ["a:b_total", "up"]
    );
    assert_eq!(
        grafana_variable_selector("label_values(fjord_raft_is_leader{job=~\"a,b\"}, instance)"),
        "fjord_raft_is_leader{job=~\"a,b\"}"
    );
    assert_eq!(grafana_variable_selector("label_values(job)"), "");
}

#[test]
fn naming_rules_catch_each_kind_of_mistake() {
    let text = "\
# HELP fjord_ok_total fine\n# TYPE fjord_ok_total counter\nfjord_ok_total 1\n\
# HELP fjord_requests a counter without _total\n# TYPE fjord_requests counter\nfjord_requests 1\n\
# HELP fjord_open_total a gauge with _total\n# TYPE fjord_open_total gauge\nfjord_open_total 1\n\
# HELP fjord_wait_ms not a base unit\n# TYPE fjord_wait_ms gauge\nfjord_wait_ms 1\n\
# HELP fjord_log_mib_size not a base unit\n# TYPE fjord_log_mib_size gauge\nfjord_log_mib_size 1\n\
# HELP kafka_things no prefix\n# TYPE kafka_things gauge\nkafka_things 1\n\
# HELP fjord_leader_count a histogram's suffix\n# TYPE fjord_leader_count gauge\nfjord_leader_count 1\n\
# TYPE fjord_undocumented gauge\nfjord_undocumented 1\n\
# HELP fjord_latency_seconds fine\n# TYPE fjord_latency_seconds histogram\n\
fjord_latency_seconds_bucket{le=\"+Inf\"} 1\nfjord_latency_seconds_sum 1\nfjord_latency_seconds_count 1\n\
fjord_orphan 1\n";
    let violations = naming_violations(&parse_exposition(text));
    let flagged: BTreeSet<&str> = violations
        .iter()
        .filter_map(|v| v.split(':').next())
        .collect();
    assert_eq!(
        flagged,
        BTreeSet::from([
            "fjord_requests",
            "fjord_open_total",
            "fjord_wait_ms",
            "fjord_log_mib_size",
            "kafka_things",
            "fjord_leader_count",
            "fjord_undocumented",
            "fjord_orphan",
        ]),
        "{violations:#?}"
    );
}
