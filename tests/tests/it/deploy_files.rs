//! The deployment files of deploy/ are valid for the tools that read them: Prometheus's
//! config and rules for promtool (and the rules' unit tests pass), the dashboard's queries
//! for Prometheus's parser, the DaemonSet and the Parca config as YAML with what the agent
//! needs in them, the systemd unit for `systemd-analyze verify`. (That every metric the
//! dashboard and the rules query is one /metrics exposes is checked beside the families, in
//! memtrace/src/agent/metrics_tests.rs.)

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use memtrace_tests::{memtrace_bin, require_tool, workspace_root, Scratch};
use serde_json::Value;

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

fn read(relative: &str) -> String {
    let path = deploy().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Runs `command`; panics with its output unless it succeeds.
#[track_caller]
fn succeeds(command: &mut Command) -> String {
    let output = command.output().expect("spawn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?}: {text}");
    text
}

#[test]
fn promtool_accepts_the_prometheus_config_and_the_rules_and_their_tests_pass() {
    let promtool = require_tool("promtool", "prometheus");
    let prometheus = deploy().join("prometheus");
    let config = succeeds(
        Command::new(&promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&prometheus),
    );
    assert!(!config.contains("WARNING"), "{config}");
    let rules = succeeds(
        Command::new(&promtool)
            .args(["check", "rules", "rules.yml"])
            .current_dir(&prometheus),
    );
    assert!(rules.contains("SUCCESS: 6 rules found"), "{rules}");
    let tests = succeeds(
        Command::new(&promtool)
            .args(["test", "rules", "rules_test.yml"])
            .current_dir(&prometheus),
    );
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert of rules.yml is tested.
    let tested = read("prometheus/rules_test.yml");
    for line in read("prometheus/rules.yml").lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tested.contains(&format!("alertname: {alert}\n")),
                "{alert} has no test"
            );
        }
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/memtrace.json")).expect("the dashboard is JSON")
}

/// Every PromQL expression of a dashboard's panels.
fn panel_exprs(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("a target's expr")
                .to_string()
        })
        .collect()
}

#[test]
fn the_dashboard_parses_and_its_queries_are_valid_promql() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let exprs = panel_exprs(&dashboard);
    // What issue #27 asks the dashboard to show.
    for family in [
        "memtrace_mapped_bytes",
        "memtrace_allocated_bytes",
        "memtrace_cgroup_allocated_bytes",
        "memtrace_growth_bytes_per_second",
        "memtrace_failures_total",
        "memtrace_captures_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(family)),
            "no panel shows {family}"
        );
    }
    let by_kind_per_process = |family: &str| {
        exprs
            .iter()
            .any(|e| e.contains(family) && e.contains("pid") && e.contains("kind"))
    };
    assert!(by_kind_per_process("memtrace_mapped_bytes"));
    assert!(by_kind_per_process("memtrace_allocated_bytes"));

    let promtool = require_tool("promtool", "prometheus");
    // Grafana's variables, as Grafana would expand them, and each query as a recording rule
    // for promtool to parse.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let queries: Vec<String> = exprs
        .iter()
        .cloned()
        .chain(variables.iter().filter(|v| v["type"] == "query").map(|v| {
            let definition = v["definition"].as_str().unwrap();
            // label_values(QUERY, LABEL) is Grafana's: its QUERY is PromQL.
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(query, _)| query.to_string())
                .expect("label_values(QUERY, LABEL)");
            inner
        }))
        .map(|query| {
            query
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*")
                .replace("$comm", ".*")
                .replace("$cgroup", ".*")
        })
        .collect();
    assert!(!queries.iter().any(|q| q.contains('$')), "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(query).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let scratch = Scratch::new("dashboard-queries");
    let file = scratch.file("dashboard.rules.yml");
    std::fs::write(&file, rules).unwrap();
    let checked = succeeds(Command::new(&promtool).arg("check").arg("rules").arg(&file));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// The YAML documents of a file (separated by `---` lines), as JSON values.
fn yaml_documents(relative: &str) -> Vec<Value> {
    read(relative)
        .split("\n---\n")
        .map(|document| {
            let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(document)
                .unwrap_or_else(|error| panic!("{relative}: {error}"));
            serde_json::to_value(yaml).unwrap()
        })
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_daemonset_shares_the_hosts_pids_with_only_the_capabilities_tracing_needs() {
    let documents = yaml_documents("kubernetes/daemonset.yaml");
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "DaemonSet", "NetworkPolicy"]
    );
    let daemonset = &documents[2];
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(
        daemonset["spec"]["selector"]["matchLabels"],
        daemonset["spec"]["template"]["metadata"]["labels"]
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let mut added = strings(&security["capabilities"]["add"]);
    added.sort_unstable();
    assert_eq!(
        added,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );

    // The agent's arguments: its CLI as issue #26 gives it.
    let args = strings(&agent["args"]);
    assert_eq!(args[0], "agent");
    let after = |flag: &str| {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag}"));
        args[at + 1]
    };
    assert_eq!(after("--listen"), "0.0.0.0:9464");
    let capture_dir = after("--capture-dir");

    // /sys/fs/cgroup and the capture directory, from the host.
    let mounts = agent["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let host_path_at = |mount_path: &str| -> (String, bool) {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        (
            volume["hostPath"]["path"].as_str().unwrap().to_string(),
            mount["readOnly"] == true,
        )
    };
    assert_eq!(
        host_path_at("/sys/fs/cgroup"),
        ("/sys/fs/cgroup".into(), true)
    );
    assert_eq!(host_path_at(capture_dir), (capture_dir.to_string(), false));

    let port = &agent["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_u64()),
        (Some("metrics"), Some(9464))
    );
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], "metrics");

    // Only the monitoring namespace reaches it; the PodMonitor scrapes that port.
    let policy = &documents[3];
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "metrics");
    let monitors = yaml_documents("kubernetes/podmonitor.yaml");
    assert_eq!(monitors[0]["kind"], "PodMonitor");
    assert_eq!(
        monitors[0]["spec"]["selector"]["matchLabels"],
        daemonset["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        monitors[0]["spec"]["podMetricsEndpoints"][0]["port"],
        "metrics"
    );
}

#[test]
fn the_profile_scrapers_read_the_agents_pprof_paths_and_nothing_else() {
    let parca = &yaml_documents("parca/parca.yaml")[0];
    let job = &parca["scrape_configs"][0];
    assert_eq!(job["static_configs"][0]["targets"][0], "127.0.0.1:9464");
    let pprof = job["profiling_config"]["pprof_config"].as_object().unwrap();
    let enabled: Vec<(&str, &str)> = pprof
        .iter()
        .filter(|(_, profile)| profile["enabled"] == true)
        .map(|(name, profile)| (name.as_str(), profile["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        enabled,
        [
            ("memory", "/debug/pprof/allocs"),
            ("memtrace_heap", "/debug/pprof/heap")
        ]
    );
    // Parca's defaults that the agent does not serve are turned off.
    for default in ["process_cpu", "block", "mutex", "goroutine"] {
        assert_eq!(pprof[default]["enabled"], false, "{default}");
    }

    // Alloy's configuration language has no parser here: its blocks, read as text.
    let alloy = read("alloy/memtrace.alloy");
    let block = |name: &str| -> String {
        let start = alloy
            .find(&format!("{name} {{"))
            .unwrap_or_else(|| panic!("{name}"));
        let end = alloy[start..].find('}').unwrap();
        alloy[start..start + end].to_string()
    };
    assert!(block("profile.memory").contains("path    = \"/debug/pprof/allocs\""));
    assert!(block("profile.custom \"memtrace_heap\"").contains("path    = \"/debug/pprof/heap\""));
    for default in ["process_cpu", "block", "mutex", "goroutine"] {
        assert!(
            block(&format!("profile.{default}")).contains("enabled = false"),
            "{default}"
        );
    }
}

/// The unit's `Key=value` lines (the last of each key).
fn unit_setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_systemd_unit_runs_the_agent_confined_and_verifies() {
    let unit = read("systemd/memtrace-agent.service");
    let setting = |key: &str| unit_setting(&unit, key).unwrap_or_else(|| panic!("no {key}="));
    assert_eq!(setting("Type"), "simple");
    assert_eq!(setting("Restart"), "on-failure");
    assert_eq!(setting("ProtectSystem"), "strict");
    assert_eq!(setting("LimitMEMLOCK"), "infinity");
    assert_eq!(setting("NoNewPrivileges"), "yes");
    let mut capabilities: Vec<&str> = setting("CapabilityBoundingSet").split(' ').collect();
    capabilities.sort_unstable();
    assert_eq!(
        capabilities,
        [
            "CAP_BPF",
            "CAP_DAC_READ_SEARCH",
            "CAP_PERFMON",
            "CAP_SYS_PTRACE",
            "CAP_SYS_RESOURCE"
        ]
    );
    // The captures go where ProtectSystem=strict lets it write: its StateDirectory.
    let exec: Vec<&str> = setting("ExecStart").split(' ').collect();
    assert_eq!(&exec[..3], ["/usr/local/bin/memtrace", "agent", "--listen"]);
    let capture_dir = exec[exec.iter().position(|a| *a == "--capture-dir").unwrap() + 1];
    let state: Vec<&str> = setting("StateDirectory").split(' ').collect();
    assert!(
        state
            .iter()
            .any(|dir| Path::new("/var/lib").join(dir) == Path::new(capture_dir)),
        "{capture_dir} is not a StateDirectory ({state:?})"
    );
    // Logs on stderr, into the journal: nothing sends them elsewhere.
    assert!(unit_setting(&unit, "StandardError").is_none());

    let analyze = require_tool("systemd-analyze", "systemd");
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let scratch = Scratch::new("systemd-unit");
    let copy = scratch.file("memtrace-agent.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/memtrace", memtrace_bin().to_str().unwrap()),
    )
    .unwrap();
    let verified = succeeds(Command::new(analyze).arg("verify").arg(&copy));
    assert!(verified.trim().is_empty(), "{verified}");
}

#[test]
fn the_readme_walks_through_every_file() {
    let readme = read("README.md");
    let mut files = Vec::new();
    let mut directories = vec![deploy()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                directories.push(path);
            } else {
                files.push(path.strip_prefix(deploy()).unwrap().to_path_buf());
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let name = file.to_str().unwrap();
        if name != "README.md" {
            assert!(
                readme.contains(name),
                "deploy/README.md does not mention {name}"
            );
        }
    }
}
