//! The agent as a fleet sees it: Debian's Prometheus scraping its /metrics every second, and
//! `go tool pprof` reading its heap profile, both over loopback as a real deployment would.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{program, require_root, require_tool, spawn_ready, Abi, Runtime, Scratch};
use serde_json::Value;

use super::agent::{doublemapper_bytes, monotonic_ns, rate_between, Agent, ONE_AGENT};
use super::sshd::free_port;

/// Kills the child when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 GET on loopback: status, headers (lowercase names) and body.
fn get(port: u16, path: &str, accept: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let accept = accept
        .map(|accept| format!("Accept: {accept}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    if headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value == "chunked")
    {
        body = unchunk(&body);
    }
    (status, headers, body)
}

fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(header, _)| header == name)
        .map(|(_, value)| value.as_str())
}

/// `text` for a URL's query string.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Prometheus' instant query: its result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let (status, _, body) = get(
        port,
        &format!("/api/v1/query?query={}", percent_encoded(promql)),
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Debian's Prometheus, its config and data in the scratch directory, scraping the agent on
/// loopback every second.
fn start_prometheus(scratch: &Scratch, agent_port: u16) -> (Guard, u16) {
    let prometheus = require_tool("prometheus", "prometheus");
    let port = free_port();
    let config = scratch.file("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: memtrace\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.file("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let give_up = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < give_up, "prometheus never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, port)
}

/// Waits until `check` holds of a query's result, or fails saying what it last was.
#[track_caller]
fn eventually(
    port: u16,
    promql: &str,
    timeout: Duration,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let give_up = Instant::now() + timeout;
    loop {
        let result = query(port, promql);
        if check(&result) {
            return result;
        }
        assert!(
            Instant::now() < give_up,
            "{promql} never held within {timeout:?}; last: {result:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A copy of `program` named `name`: its comm is its name.
fn renamed(scratch: &Scratch, program: &Path, name: &str) -> std::path::PathBuf {
    let copy = scratch.file(name);
    std::fs::copy(program, &copy).unwrap();
    copy
}

/// Seed 000's leak as a fleet sees it: Prometheus scraping the agent finds the slow leaker's
/// memfd bytes rising at the rate the kernel shows, and its `growing` finding; its /metrics
/// pass `promtool check metrics`, in both exposition formats.
#[test]
fn prometheus_scraping_the_agent_sees_a_leak_at_its_true_rate() {
    require_root();
    let promtool = require_tool("promtool", "prometheus");
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("fleet-prometheus");
    let agent_port = free_port();
    let listen = format!("127.0.0.1:{agent_port}");
    let agent = Agent::start(&scratch.file("captures"), &["--listen", &listen]);
    let (_prometheus, port) = start_prometheus(&scratch, agent_port);
    let slowleak = renamed(
        &scratch,
        &program("leaky_service", Abi::X86_64, Runtime::Libc),
        "slowleak",
    );
    let (leaker, _) = spawn_ready(Command::new(&slowleak).arg("900"));
    let pid = leaker.id();
    let leaker = Guard(leaker);
    let mut samples = Vec::new();
    let sample_for = |samples: &mut Vec<(u64, u64)>, seconds: u64| {
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            if let Some(bytes) = doublemapper_bytes(pid) {
                samples.push((monotonic_ns(), bytes));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // 25 s of leaking, 20 s of which the deriv below spans.
    sample_for(&mut samples, 25);
    let promql = r#"deriv(memtrace_allocated_bytes{comm="slowleak",kind="memfd"}[20s])"#;
    let now = monotonic_ns();
    let result = query(port, promql);
    let true_rate = rate_between(&samples, now - 20_000_000_000, now);
    let rate: f64 = result
        .first()
        .unwrap_or_else(|| panic!("{promql}: no series; the agent said:\n{}", agent.said()))
        ["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (rate / true_rate - 1.0).abs() <= 0.20,
        "Prometheus' deriv {rate:.0} B/s against /proc's {true_rate:.0} B/s"
    );
    let growing = eventually(
        port,
        r#"memtrace_findings{kind="growing",comm="slowleak"}"#,
        Duration::from_secs(20),
        |result| !result.is_empty(),
    );
    assert_eq!(growing[0]["metric"]["pid"], pid.to_string());

    // The text format passes promtool's checks; OpenMetrics (what Prometheus asks for first,
    // and has been reading all along: the deriv above came through it) is served for its
    // Accept header and ends as the format says.
    let (status, headers, body) = get(agent_port, "/metrics", None);
    assert_eq!(status, 200);
    let content_type = header(&headers, "content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(&body).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, headers, body) = get(
        agent_port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    );
    assert_eq!(status, 200);
    let content_type = header(&headers, "content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(String::from_utf8(body)
        .unwrap()
        .trim_end()
        .ends_with("# EOF"));
    let up = query(port, r#"up{job="memtrace"}"#);
    assert_eq!(
        up[0]["value"][1], "1",
        "Prometheus scrapes the agent: {up:?}"
    );
    drop(leaker);
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// Seed 002 as a continuous profiler sees it: `go tool pprof -top` of the agent's heap
/// profile, while the 16 MiB-block leaker runs, names the leaking function first among the
/// leaker's samples (told apart by their `comm` label).
#[test]
fn go_tool_pprof_of_the_heap_endpoint_names_the_leaking_function_first() {
    require_root();
    let go = require_tool("go", "golang-go");
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("fleet-pprof");
    let agent_port = free_port();
    let listen = format!("127.0.0.1:{agent_port}");
    let agent = Agent::start(&scratch.file("captures"), &["--listen", &listen]);
    let (leaker, _) = spawn_ready(
        Command::new(program("bigalloc", Abi::X86_64, Runtime::Libc)).args(["12", "-", "60"]),
    );
    let _leaker = Guard(leaker);
    // The last stack sample is unwound a moment after its mmap.
    std::thread::sleep(Duration::from_millis(500));
    let output = Command::new(go)
        // The agent profiles every process, the go tool itself too (its runtime's arenas
        // hold more than the leak): asked about the leaker's samples, as a profiler's UI is.
        .args(["tool", "pprof", "-top", "-tagfocus=comm=bigalloc"])
        .arg(format!("http://127.0.0.1:{agent_port}/debug/pprof/heap"))
        .env("HOME", scratch.path())
        .env("PPROF_TMPDIR", scratch.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Type: inuse_space"), "{text}");
    let first = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows:\n{text}"));
    assert!(
        first.ends_with("hx_alloc_tmp"),
        "the leaking function first:\n{text}"
    );
    agent.stop();
}

/// Bad requests never stop the agent, and a slow client never delays another's scrape.
#[test]
fn bad_requests_and_a_slow_client_never_stop_the_agent() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("fleet-bad");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(&scratch.file("captures"), &["--listen", &listen]);
    // Slow clients: connections holding half a request.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    let raw = |request: &[u8]| -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let _ = stream.write_all(request);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let status = |line: &str| line.split_whitespace().nth(1).unwrap_or("").to_owned();
    assert_eq!(
        status(&raw(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )),
        "405"
    );
    assert_eq!(
        status(&raw(
            b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )),
        "404"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert!(
        status(&raw(huge.as_bytes())).starts_with('4'),
        "huge headers: 4xx"
    );
    let garbage = raw(b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || status(&garbage).starts_with('4'),
        "{garbage}"
    );
    let started = Instant::now();
    let (code, _, body) = get(port, "/metrics", None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("memtrace_events_total"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a scrape beside 20 slow clients took {:?}",
        started.elapsed()
    );
    slow.clear();
    let (code, _, _) = get(port, "/", None);
    assert_eq!(code, 200);
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// 5000 short-lived processes come and gone leave no series of their own behind.
#[test]
fn short_lived_processes_leave_no_series_behind() {
    require_root();
    let _one = ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = Scratch::new("fleet-churn");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(&scratch.file("captures"), &["--listen", &listen]);
    let churn = renamed(&scratch, Path::new("/bin/true"), "churn5000");
    let script = format!("for i in $(seq 5000); do {}; done", churn.display());
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());
    // Between scrapes the exited children fold away; a scrape then knows none of them.
    std::thread::sleep(Duration::from_secs(2));
    let _ = get(port, "/metrics", None);
    let (_, _, body) = get(port, "/metrics", None);
    let text = String::from_utf8(body).unwrap();
    let own: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("comm=\"churn5000\"") && line.contains("pid=\""))
        .collect();
    assert!(
        own.is_empty(),
        "series of exited processes: {:?}",
        &own[..own.len().min(5)]
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}
