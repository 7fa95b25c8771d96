//! A whole server traced as its users trace one (#24): Debian's PostgreSQL, a throw-away
//! cluster under `pgbench -C` (a new backend per transaction), traced with `--pid POSTMASTER
//! --follow`. The text report opens on the session's totals and its ranked table and stays a
//! few screens; `--all` lists every process; the HTML page stays small, shows the overview in
//! headless Chromium, sorts its table and opens a process by clicks; no live process has an
//! unreleased-* finding.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use memtrace_tests::{devtools::Browser, replay_json, require_root, Scratch, Tracer};
use serde_json::Value;

/// The newest PostgreSQL server Debian's packages installed (`cargo xtask setup` installs it).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (cargo xtask setup installs Debian's postgresql)")
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pgbench").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|version| version.file_name()?.to_str()?.parse::<u32>().ok())
    });
    versions
        .pop()
        .expect("no PostgreSQL server with initdb and pgbench under /usr/lib/postgresql")
}

/// Runs a PostgreSQL program as the `postgres` user (the server refuses to run as root).
#[track_caller]
fn as_postgres(program: &Path, args: &[&str]) -> String {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed: {text}",
        program.display()
    );
    text
}

/// A cluster in a scratch directory, listening only on a unix socket there; stopped when
/// dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: String,
}

impl Cluster {
    fn start(scratch: &Scratch) -> Self {
        let bin = postgres_bin();
        let home = scratch.file("pg");
        std::fs::create_dir_all(&home).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&home)
            .status()
            .unwrap();
        assert!(status.success());
        let data = home.join("data");
        let socket_dir = home.to_str().unwrap().to_owned();
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let options = format!("-k {socket_dir} -c listen_addresses= -c shared_buffers=16MB");
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                home.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        let cluster = Self {
            bin,
            data,
            socket_dir,
        };
        cluster.pgbench(&["-i", "-s", "1", "-q"]);
        cluster
    }

    fn postmaster(&self) -> u32 {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn pgbench(&self, args: &[&str]) -> String {
        let mut all = vec!["-h", &self.socket_dir];
        all.extend_from_slice(args);
        all.push("postgres");
        as_postgres(&self.bin.join("pgbench"), &all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

fn alive_pids(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|process| process["alive"] == true)
        .map(|process| process["pid"].as_u64().unwrap())
        .collect()
}

/// `pid N (` blocks of the text report.
fn blocks(text: &str) -> usize {
    text.lines().filter(|line| line.starts_with("pid ")).count()
}

#[test]
fn a_postgresql_session_reads_from_its_summary() {
    require_root();
    let scratch = Scratch::new("reports-postgres");
    let cluster = Cluster::start(&scratch);
    let postmaster = cluster.postmaster();
    let text_path = scratch.file("report.txt");
    let html_path = scratch.file("report.html");
    let recording = scratch.file("session.mtr");
    let tracer = Tracer::attach(&[
        "--pid",
        &postmaster.to_string(),
        "--follow",
        "--duration",
        "7",
        "--record",
        recording.to_str().unwrap(),
        "--html",
        html_path.to_str().unwrap(),
        "-o",
        text_path.to_str().unwrap(),
    ]);
    let bench = cluster.pgbench(&["-C", "-T", "3", "-c", "2"]);
    let (status, stderr) = tracer.wait(Duration::from_secs(60));
    assert!(status.success(), "memtrace failed: {stderr}");
    assert!(bench.contains("tps = "), "{bench}");
    let text = std::fs::read_to_string(&text_path).unwrap();
    let (output, report) = replay_json(&scratch, &recording, &[]);
    assert!(output.status.success());
    let processes = report["processes"].as_array().unwrap().len();
    // A backend per transaction: a server's worth of processes, most of them alike.
    assert!(processes >= 60, "only {processes} processes traced");

    // The default text: the totals and the ranked table within its first 40 lines, and a
    // few screens in all.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 300, "{} lines:\n{text}", lines.len());
    let first: Vec<&str> = lines.iter().take(40).copied().collect();
    let at = |prefix: &str| {
        first
            .iter()
            .position(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in the first 40:\n{text}"))
    };
    let session = at("Session: ");
    let heading = at("Processes by steady growth, then memory held: 20 of ");
    let rest = at("  … ");
    let legend = at("  held: ");
    assert!(session < heading && heading < rest && rest < legend);
    // 20 rows between the column heads and the rest line, the postmaster among them.
    assert_eq!(rest - heading - 2, 20, "{text}");
    let rows = &first[heading + 2..rest];
    assert!(
        rows.iter()
            .any(|row| row.split_whitespace().next() == Some(&postmaster.to_string())),
        "the postmaster holds the shared memory: {rows:#?}"
    );
    // Detail for the table's processes (and those with findings), not for every one. (Past
    // --keep-exited, exited backends are folded into a row of their program.)
    let listed_rows = rows
        .iter()
        .filter(|row| row.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    let detailed = blocks(&text);
    assert!(
        detailed >= listed_rows && detailed < processes,
        "{detailed} blocks for {listed_rows} rows:\n{text}"
    );

    // --all lists every process, as before.
    let all_path = scratch.file("all.txt");
    let output = Command::new(memtrace_tests::memtrace_bin())
        .arg("replay")
        .arg(&recording)
        .args(["--all", "-o", all_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let all = std::fs::read_to_string(&all_path).unwrap();
    assert_eq!(blocks(&all), processes);

    // The JSON carries the summary and the ranking.
    let ranking = &report["ranking"];
    let programs = report["exited"].as_array().unwrap().len();
    assert_eq!(ranking["total_rows"], (processes + programs) as u64);
    assert_eq!(ranking["rows"].as_array().unwrap().len(), 20);
    assert_eq!(ranking["rest"]["rows"], (processes + programs) as u64 - 20);
    let summary = &report["summary"];
    assert_eq!(
        summary["live"]["processes"].as_u64().unwrap() as usize,
        alive_pids(&report).len()
    );
    assert!(
        summary["exited"]["processes"].as_u64().unwrap() > 40,
        "{summary:#}"
    );

    // Buffers and shared memory a live backend or the postmaster holds are state.
    let alive = alive_pids(&report);
    for finding in report["findings"].as_array().unwrap() {
        let kind = finding["kind"].as_str().unwrap();
        assert!(
            !(kind.starts_with("unreleased-") && alive.contains(&finding["pid"].as_u64().unwrap())),
            "a live process's memory is no finding: {finding:#}"
        );
    }

    // The page: small, and it works.
    let page_bytes = std::fs::metadata(&html_path).unwrap().len();
    assert!(page_bytes <= 2 << 20, "the page is {page_bytes} bytes");
    let user_data = scratch.file("chromium");
    let mut browser = Browser::launch(&user_data);
    browser.open(&format!("file://{}", html_path.display()));
    browser.wait_for(
        "document.documentElement.getAttribute('data-check') !== null",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("document.documentElement.getAttribute('data-check')"),
        "ok",
        "{}",
        browser.eval("document.getElementById('check').textContent")
    );
    // The overview's two charts, drawn.
    let overview = browser.eval(
        "Array.from(document.querySelectorAll('#overview svg.chart.overview')).map(function (svg) { \
         var box = svg.getBoundingClientRect(); return box.width > 0 && box.height > 0 && \
         svg.querySelectorAll('polygon').length > 0; })",
    );
    assert_eq!(overview, serde_json::json!([true, true]));
    assert_eq!(
        browser.eval("document.querySelectorAll('#ranking tbody tr').length"),
        (processes + programs) as u64
    );
    // A click on "pid" sorts by it, largest first; another, smallest first.
    let pids = "Array.from(document.querySelectorAll('#ranking tbody tr')).map(function (row) { \
                return Number(row.cells[1].getAttribute('data-value')); })";
    browser.click("#ranking th:nth-child(2)");
    let descending: Vec<i64> = serde_json::from_value(browser.eval(pids)).unwrap();
    assert!(
        descending.windows(2).all(|pair| pair[0] >= pair[1]),
        "{descending:?}"
    );
    browser.click("#ranking th:nth-child(2)");
    let ascending: Vec<i64> = serde_json::from_value(browser.eval(pids)).unwrap();
    assert!(
        ascending.windows(2).all(|pair| pair[0] <= pair[1]),
        "{ascending:?}"
    );
    assert_ne!(ascending, descending);
    // A click on a row opens its process: its section alone shows, its charts drawn.
    let opened_first = browser.eval("document.documentElement.getAttribute('data-open')");
    let target = browser.eval(
        "Array.from(document.querySelectorAll('#ranking tr.opens')).map(function (row) { \
         return row.getAttribute('data-target'); }).filter(function (id) { \
         return document.querySelector('#' + id + ' svg.chart'); })[3]",
    );
    let target = target
        .as_str()
        .expect("a row whose process has charts")
        .to_owned();
    assert_ne!(opened_first, target);
    browser.click(&format!("#ranking tr[data-target='{target}']"));
    assert_eq!(
        browser.eval("document.documentElement.getAttribute('data-open')"),
        target
    );
    let shown = browser.eval(
        "Array.from(document.querySelectorAll('section.process')).filter(function (section) { \
         return !section.hidden; }).map(function (section) { return section.id; })",
    );
    assert_eq!(shown, serde_json::json!([target]));
    assert_eq!(browser.eval("memtraceCheck()"), true);
    assert!(
        browser
            .eval(&format!(
                "document.querySelectorAll('#{target} svg.chart').length"
            ))
            .as_u64()
            .unwrap()
            >= 3
    );
    assert_eq!(browser.eval("location.hash"), format!("#{target}"));
}
