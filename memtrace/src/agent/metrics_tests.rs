use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Command,
};

use proptest::prelude::*;

use super::*;
use crate::agent::metrics_bench::synthetic_input;

/// One sample line of an exposition: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition (either format). Label values are unescaped.
pub(crate) fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            let mut parsed = BTreeMap::new();
            let mut rest = labels;
            while let Some((key, after)) = rest.split_once("=\"") {
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        (at, '"') => break at,
                        (_, other) => value.push(other),
                    }
                };
                parsed.insert(key.trim_start_matches(',').to_string(), value);
                rest = &after[end + 1..];
            }
            Sample {
                name: name.to_string(),
                labels: parsed,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .collect()
}

/// A tool the tests need: its path, None outside CI when it is missing (the test then says
/// so and passes); in CI (CI=true) a missing tool fails the test.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing: install Debian's prometheus package (cargo xtask setup)"
        );
        eprintln!("{name} is missing: skipping (CI=true makes this a failure)");
    }
    found
}

fn process(pid: u32, comm: &str, allocated: u64) -> ProcessFigures {
    ProcessFigures {
        pid,
        first_seen_ns: u64::from(pid),
        alive: true,
        comm: comm.into(),
        cgroup: "/system.slice/test.service".into(),
        mapped: vec![
            KindFigures {
                kind: "file",
                regions: 10,
                bytes: 1 << 20,
            },
            KindFigures {
                kind: "memfd",
                regions: 2,
                bytes: allocated,
            },
        ],
        allocated: vec![KindFigures {
            kind: "memfd",
            regions: 2,
            bytes: allocated,
        }],
        growth: vec![],
        brk_room: Some(1 << 30),
        map_count: 12,
        findings: vec![],
        syscalls: vec![SyscallCount {
            syscall: "mmap",
            calls: 10,
            failed: 1,
        }],
        failures: vec![FailureCount {
            syscall: "mmap",
            errno: "ENOMEM",
            count: 1,
        }],
    }
}

fn input(processes: Vec<ProcessFigures>) -> MetricsInput {
    MetricsInput {
        processes,
        ..MetricsInput::default()
    }
}

const AGENT: Option<AgentFigures> = Some(AgentFigures {
    resident_bytes: 12 << 20,
    cpu_seconds: 1.5,
});

#[test]
fn every_family_is_exposed_with_its_name_and_type_in_both_formats() {
    let mut metrics = Metrics::default();
    let text = metrics.render_with(synthetic_input(30, 1), AGENT, Format::Text);
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| line.split_once(' ').unwrap())
        .collect();
    let mut expected: Vec<&str> = FAMILIES.to_vec();
    expected.sort_unstable();
    assert_eq!(types.keys().copied().collect::<Vec<_>>(), expected);
    for (name, kind) in &types {
        let want = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(*kind, want, "{name}");
    }
    // Every family has samples with this input, and every sample belongs to a family.
    let samples = samples(&text);
    for name in FAMILIES {
        assert!(
            samples.iter().any(|s| s.name == *name),
            "no sample of {name}"
        );
    }
    assert!(samples.iter().all(|s| FAMILIES.contains(&s.name.as_str())));

    let openmetrics = metrics.render_with(synthetic_input(30, 2), AGENT, Format::OpenMetrics);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE memtrace_syscalls counter\n"));
    assert!(openmetrics.contains("# UNIT memtrace_allocated_bytes bytes\n"));
    assert!(openmetrics.contains("# UNIT memtrace_growth_bytes_per_second bytes_per_second\n"));
    assert!(openmetrics.contains("# UNIT process_cpu_seconds seconds\n"));
    let names: Vec<String> = samples_names(&openmetrics);
    for name in FAMILIES {
        assert!(names.iter().any(|n| n == name), "no sample of {name}");
    }
    assert!(!text.contains("# EOF"));
}

fn samples_names(exposition: &str) -> Vec<String> {
    samples(exposition).into_iter().map(|s| s.name).collect()
}

#[test]
fn values_are_the_inputs_with_their_labels() {
    let mut slowleak = process(42, "slowleak", 7 << 20);
    slowleak.findings = vec![("growing", 1)];
    slowleak.growth = vec![GroupGrowth {
        group: "memfd:doublemapper".into(),
        bytes_per_s: 65536.5,
    }];
    let mut input = input(vec![slowleak]);
    input.max_map_count = Some(65530);
    input.kernel = vec![("Slab".into(), 1 << 24)];
    input.events = 77;
    input.lost = vec![("ring_full", 3)];
    input.captures = vec![("growth", 2)];
    let text = Metrics::default().render_with(input, AGENT, Format::Text);
    let samples = samples(&text);
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found = find(&samples, name, labels);
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0].value
    };
    let pid = ("pid", "42");
    let comm = ("comm", "slowleak");
    let cgroup = ("cgroup", "/system.slice/test.service");
    let memfd = ("kind", "memfd");
    assert_eq!(
        one("memtrace_allocated_bytes", &[pid, comm, cgroup, memfd]),
        (7 << 20) as f64
    );
    assert_eq!(
        one("memtrace_mapped_bytes", &[pid, ("kind", "file")]),
        (1 << 20) as f64
    );
    assert_eq!(one("memtrace_regions", &[pid, ("kind", "file")]), 10.0);
    assert_eq!(
        one(
            "memtrace_growth_bytes_per_second",
            &[pid, comm, cgroup, ("group", "memfd:doublemapper")]
        ),
        65536.5
    );
    assert_eq!(
        one("memtrace_brk_room_bytes", &[pid, comm]),
        (1u64 << 30) as f64
    );
    assert_eq!(one("memtrace_map_areas", &[pid, comm]), 12.0);
    assert_eq!(one("memtrace_max_map_areas", &[]), 65530.0);
    assert_eq!(
        one(
            "memtrace_syscalls_total",
            &[comm, ("syscall", "mmap"), ("result", "ok")]
        ),
        9.0
    );
    assert_eq!(
        one("memtrace_syscalls_total", &[comm, ("result", "failed")]),
        1.0
    );
    assert_eq!(
        one("memtrace_failures_total", &[pid, comm, ("errno", "ENOMEM")]),
        1.0
    );
    assert_eq!(
        one("memtrace_findings", &[("kind", "growing"), pid, comm]),
        1.0
    );
    assert_eq!(
        one("memtrace_cgroup_allocated_bytes", &[cgroup, memfd]),
        (7 << 20) as f64
    );
    assert_eq!(
        one("memtrace_kernel_bytes", &[("name", "Slab")]),
        (1 << 24) as f64
    );
    assert_eq!(one("memtrace_events_total", &[]), 77.0);
    assert_eq!(
        one("memtrace_lost_events_total", &[("reason", "ring_full")]),
        3.0
    );
    assert_eq!(
        one("memtrace_captures_total", &[("trigger", "growth")]),
        2.0
    );
    assert_eq!(one("process_resident_memory_bytes", &[]), (12 << 20) as f64);
    assert_eq!(one("process_cpu_seconds_total", &[]), 1.5);
}

#[test]
fn label_values_are_escaped() {
    let comm = "a \"quoted\"\\ comm\nwith a newline";
    let text = Metrics::default().render_with(input(vec![process(1, comm, 1)]), None, Format::Text);
    let samples = samples(&text);
    assert!(
        !find(&samples, "memtrace_map_areas", &[("comm", comm)]).is_empty(),
        "{text}"
    );
}

#[test]
fn only_the_top_processes_and_those_with_findings_have_series_of_their_own() {
    // 20 processes of two comms; the 3 largest and one small one with a finding get series.
    let mut processes: Vec<ProcessFigures> = (0..20)
        .map(|i| {
            process(
                100 + i,
                if i % 2 == 0 { "even" } else { "odd" },
                u64::from(i + 1) << 20,
            )
        })
        .collect();
    processes[0].findings = vec![("unreleased-memfd", 1)];
    // An exited process is never anyone's top.
    let mut exited = process(999, "odd", 1 << 40);
    exited.alive = false;
    processes.push(exited);
    let text = Metrics::new(3).render_with(input(processes), None, Format::Text);
    let samples = samples(&text);
    let pids: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "memtrace_allocated_bytes")
        .filter_map(|s| s.labels.get("pid").map(String::as_str))
        .collect();
    assert_eq!(
        pids.into_iter().collect::<Vec<_>>(),
        ["100", "117", "118", "119"]
    );

    // The rest, summed per comm and cgroup: evens 102..=116 (i = 2, 4 .. 16), odds 101..=115.
    let summed = |comm: &str| -> f64 {
        let found: Vec<_> = find(&samples, "memtrace_allocated_bytes", &[("comm", comm)])
            .into_iter()
            .filter(|s| !s.labels.contains_key("pid"))
            .collect();
        assert_eq!(found.len(), 1);
        found[0].value
    };
    let mib = |is: std::ops::RangeInclusive<u64>, step: usize| -> f64 {
        is.step_by(step).map(|i| ((i + 1) << 20) as f64).sum()
    };
    assert_eq!(summed("even"), mib(2..=16, 2));
    assert_eq!(summed("odd"), mib(1..=15, 2));
    // Without a cgroup label: the largest map count, the least brk room.
    let map_counts = find(&samples, "memtrace_map_areas", &[("comm", "even")]);
    assert_eq!(map_counts.len(), 3, "pids 100 and 118, and the sum");
    assert!(map_counts.iter().all(|s| s.value == 12.0));
    // The per-cgroup totals count every live process, with series of its own or not.
    let cgroup = find(
        &samples,
        "memtrace_cgroup_allocated_bytes",
        &[("kind", "memfd")],
    );
    assert_eq!(cgroup.len(), 1);
    assert_eq!(cgroup[0].value, mib(0..=19, 1));
    // The sums' failures are the sums' processes'; the top processes keep theirs.
    let failures = find(&samples, "memtrace_failures_total", &[("comm", "odd")]);
    let summed_failures: Vec<_> = failures
        .iter()
        .filter(|s| !s.labels.contains_key("pid"))
        .collect();
    assert_eq!(summed_failures.len(), 1);
    assert_eq!(
        summed_failures[0].value,
        8.0 + 1.0,
        "8 live odds outside the top, and the exited one"
    );
    // Calls count every process, live, exited, with series or without.
    let calls = find(&samples, "memtrace_syscalls_total", &[("result", "ok")]);
    assert_eq!(calls.iter().map(|s| s.value).sum::<f64>(), 21.0 * 9.0);
}

#[test]
fn an_exited_process_takes_its_gauges_along_and_leaves_its_calls_to_its_comm() {
    let mut metrics = Metrics::default();
    let mut a = process(1, "job", 1 << 20);
    let b = process(2, "job", 1 << 20);
    metrics.render_with(input(vec![a.clone(), b.clone()]), None, Format::Text);
    a.alive = false;
    a.syscalls[0].calls = 30; // it called on before exiting
    let text = metrics.render_with(input(vec![a.clone(), b.clone()]), None, Format::Text);
    let samples = samples(&text);
    assert!(find(&samples, "memtrace_map_areas", &[("pid", "1")]).is_empty());
    assert!(find(&samples, "memtrace_failures_total", &[("pid", "1")]).is_empty());
    let ok = |samples: &[Sample]| {
        find(
            samples,
            "memtrace_syscalls_total",
            &[("comm", "job"), ("result", "ok")],
        )[0]
        .value
    };
    assert_eq!(ok(&samples), 29.0 + 9.0);
    // The model forgets it: its calls stay in the comm's counter.
    let text = metrics.render_with(input(vec![b.clone()]), None, Format::Text);
    assert_eq!(ok(&samples_of(&text)), 29.0 + 9.0);
    // A new process with a reused pid counts from its own start.
    let mut again = process(1, "job", 1);
    again.first_seen_ns = 1_000_000;
    again.syscalls[0].calls = 4;
    let text = metrics.render_with(input(vec![again, b]), None, Format::Text);
    assert_eq!(ok(&samples_of(&text)), 29.0 + 9.0 + 3.0);
    // All gone: nothing of "job" is left.
    let text = metrics.render_with(input(vec![]), None, Format::Text);
    assert!(!text.contains("job"), "{text}");
}

fn samples_of(text: &str) -> Vec<Sample> {
    samples(text)
}

#[test]
fn a_process_leaving_the_top_adds_only_its_later_failures_to_its_comms_sum() {
    let mut metrics = Metrics::new(1);
    let mut big = process(1, "app", 100 << 20);
    let small = process(2, "app", 1 << 20);
    big.failures[0].count = 50;
    let text = metrics.render_with(input(vec![big.clone(), small.clone()]), None, Format::Text);
    let failures = |text: &str, pid: Option<&str>| -> Option<f64> {
        samples(text)
            .into_iter()
            .find(|s| {
                s.name == "memtrace_failures_total"
                    && s.labels.get("pid").map(String::as_str) == pid
            })
            .map(|s| s.value)
    };
    assert_eq!(failures(&text, Some("1")), Some(50.0));
    assert_eq!(failures(&text, None), Some(1.0));
    // big shrinks out of the top; it fails twice more.
    big.allocated[0].bytes = 0;
    big.failures[0].count = 52;
    let text = metrics.render_with(input(vec![big.clone(), small.clone()]), None, Format::Text);
    assert_eq!(failures(&text, Some("1")), None);
    assert_eq!(
        failures(&text, Some("2")),
        Some(1.0),
        "small is the top now, with its own count"
    );
    assert_eq!(
        failures(&text, None),
        Some(1.0 + 2.0),
        "the sum went on, plus big's new failures"
    );
}

#[test]
fn five_thousand_short_lived_processes_leave_no_series_and_no_state() {
    let mut metrics = Metrics::default();
    let steady = process(1, "init", 1 << 20);
    let before = metrics.render_with(input(vec![steady.clone()]), None, Format::Text);
    for batch in 0..50u32 {
        let mut processes = vec![steady.clone()];
        processes.extend((0..100).map(|i| {
            let pid = 10_000 + batch * 100 + i;
            let mut p = process(pid, &format!("short-{}", pid % 500), u64::from(pid));
            p.findings = if i % 7 == 0 {
                vec![("growing", 1)]
            } else {
                vec![]
            };
            p.alive = i % 3 != 0;
            p
        }));
        metrics.render_with(input(processes), None, Format::Text);
    }
    let after = metrics.render_with(input(vec![steady]), None, Format::Text);
    assert_eq!(samples(&after).len(), samples(&before).len(), "{after}");
    assert!(!after.contains("short-"));
    assert_eq!(metrics.last.len(), 1);
    assert_eq!(metrics.comms.len(), 1);
}

#[test]
fn accept_headers_choose_the_format() {
    let cases = [
        (None, Format::Text),
        (Some("*/*"), Format::Text),
        (Some("text/plain"), Format::Text),
        (Some("application/openmetrics-text"), Format::OpenMetrics),
        // What Prometheus 2.42 sends.
        (
            Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics,
        ),
        (Some("text/plain;version=0.0.4;q=1, application/openmetrics-text;q=0.5"), Format::Text),
        (Some("application/openmetrics-text; q=0"), Format::Text),
        (Some("Application/OpenMetrics-Text ; Q=0.9"), Format::OpenMetrics),
        (Some("application/json"), Format::Text),
        (Some(";;,,=q=,"), Format::Text),
    ];
    for (accept, format) in cases {
        assert_eq!(Format::negotiate(accept), format, "{accept:?}");
    }
}

#[test]
fn the_agents_own_figures_are_read() {
    let figures = AgentFigures::of_self().expect("/proc/self");
    assert!(figures.resident_bytes > 1 << 20);
    assert!(figures.cpu_seconds > 0.0);
}

#[test]
fn promtool_accepts_the_text_exposition() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut metrics = Metrics::default();
    metrics.render(synthetic_input(300, 0), Format::Text);
    let text = metrics.render(synthetic_input(300, 1), Format::Text);
    let output = run_with_stdin(Command::new(promtool).args(["check", "metrics"]), &text);
    // promtool's lint: exit 0 and no complaint (it prints problems on stderr, exit 3).
    assert!(
        output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
        "promtool check metrics: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn run_with_stdin(command: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The metrics the shipped dashboard and alerting rules query are ones /metrics exposes.
#[test]
fn the_dashboard_and_the_rules_query_only_exposed_metrics() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/memtrace.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 8, "{queries:?}");
    let rules = std::fs::read_to_string(deploy.join("prometheus/rules.yml")).unwrap();
    let exprs = rule_exprs(&rules);
    assert!(exprs.len() >= 6, "{exprs:?}");
    queries.extend(exprs);
    let known = |name: &str| FAMILIES.contains(&name) || ["up", "absent"].contains(&name);
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{query}");
        for name in names {
            assert!(
                known(&name),
                "{name} (in {query}) is not a family /metrics exposes"
            );
        }
    }
}

/// The PromQL of a dashboard: its panels' targets and its query variables.
pub(crate) fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("query") {
                if let Some(definition) = map.get("definition").and_then(|d| d.as_str()) {
                    out.push(definition.to_string());
                }
            }
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(values) => values.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression names: identifiers starting memtrace_, process_, or
/// `up`, outside label matchers and strings.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut quoted = false;
    let mut word = String::new();
    for c in query.chars().chain(std::iter::once(' ')) {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth -= 1,
            _ => {}
        }
        if !quoted && depth == 0 && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("memtrace_") || word.starts_with("process_") || word == "up" {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// The `expr:` of each rule in a rules file, inline or a block scalar (`>-`, `|`) on the
/// lines below it. The crate has no YAML parser, and this is the one shape rules.yml uses
/// (tests/tests/deploy_files.rs parses it as YAML and runs promtool on it).
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let expr = expr.trim();
        if ![">", ">-", "|", "|-"].contains(&expr) {
            exprs.push(expr.to_string());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines
            .next_if(|next| next.trim().is_empty() || next.len() - next.trim_start().len() > indent)
        {
            block.push_str(next.trim());
            block.push(' ');
        }
        exprs.push(block);
    }
    exprs
}

/// Processes that come, go, grow and shrink past the top, scrape after scrape: every counter
/// series goes up or stays while it lasts.
#[derive(Clone, Debug)]
struct Step {
    /// Per process of the pool: absent, live or exited; its allocated MiB; a finding.
    states: Vec<(u8, u64, bool)>,
    /// Calls and failures each process made since the previous step.
    calls: Vec<(u64, u64)>,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        prop::collection::vec((0u8..3, 0u64..8, prop::bool::weighted(0.2)), 8),
        prop::collection::vec((0u64..5, 0u64..3), 8),
    )
        .prop_map(|(states, calls)| Step { states, calls });
    prop::collection::vec(step, 1..25)
}

proptest! {
    #[test]
    fn counters_never_go_down(steps in steps()) {
        let mut metrics = Metrics::new(2);
        let mut totals: Vec<(u64, u64, u64)> = vec![(0, 0, 0); 8];
        let mut last: HashMap<String, f64> = HashMap::new();
        for step in &steps {
            let mut processes = Vec::new();
            for (i, &(state, mib, finding)) in step.states.iter().enumerate() {
                let (calls, failures) = step.calls[i];
                totals[i].0 += calls + failures;
                totals[i].1 += failures;
                totals[i].2 += failures;
                if state == 0 {
                    continue;
                }
                let mut p = process(i as u32, ["a", "b", "c"][i % 3], mib << 20);
                p.cgroup = format!("/cg{}", i % 2);
                p.alive = state == 1;
                p.findings = if finding { vec![("growing", 1)] } else { vec![] };
                p.syscalls = vec![SyscallCount { syscall: "mmap", calls: totals[i].0, failed: totals[i].1 }];
                p.failures = vec![FailureCount { syscall: "mmap", errno: "ENOMEM", count: totals[i].2 }];
                processes.push(p);
            }
            let text = metrics.render_with(input(processes), None, Format::Text);
            let mut now = HashMap::new();
            for sample in samples(&text) {
                if sample.name.ends_with("_total") {
                    let key = format!("{}{:?}", sample.name, sample.labels);
                    if let Some(before) = last.get(&key) {
                        prop_assert!(sample.value >= *before, "{key}: {before} -> {}", sample.value);
                    }
                    now.insert(key, sample.value);
                }
            }
            last = now;
        }
    }
}
