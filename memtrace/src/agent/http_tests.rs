//! The server on a real loopback socket, with clients written here byte by byte (so they can
//! misbehave) and Debian's Prometheus scraping it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread,
    time::Instant,
};

use super::*;
use crate::agent::{
    metrics::tests::{collect_exprs, samples, tool},
    metrics::{KindFigures, ProcessFigures},
    metrics_bench::synthetic_input,
};

/// An agent whose figures the test sets; `delay` makes it slow to answer.
#[derive(Default)]
struct FakeAgent {
    delay: Mutex<Duration>,
    /// Allocated memfd bytes of "slowleak" grow by this much per second since `started`.
    leak_per_s: u64,
    started: Mutex<Option<Instant>>,
}

impl Scrape for FakeAgent {
    fn metrics(&self) -> Result<MetricsInput, Unavailable> {
        thread::sleep(*self.delay.lock().unwrap());
        let mut input = synthetic_input(4, 1);
        let started = *self
            .started
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let leaked = (started.elapsed().as_secs_f64() * self.leak_per_s as f64) as u64;
        input.processes.push(ProcessFigures {
            pid: 4242,
            alive: true,
            comm: "slowleak".into(),
            allocated: vec![KindFigures {
                kind: "memfd",
                regions: leaked >> 16,
                bytes: leaked,
            }],
            findings: vec![("growing", 1)],
            ..ProcessFigures::default()
        });
        Ok(input)
    }

    fn heap_profile(&self) -> Result<Vec<u8>, Unavailable> {
        Ok(b"heap profile".to_vec())
    }

    fn allocs_profile(&self) -> Result<Vec<u8>, Unavailable> {
        Err(Unavailable("no call stacks were sampled".into()))
    }
}

/// A server on its own runtime, on a free loopback port; stopped when dropped.
struct Running {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn start(agent: Arc<dyn Scrape>, options: ServerOptions) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, address) = std::sync::mpsc::channel();
    let thread = thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), options)
                .await
                .unwrap();
            bound.send(server.local_addr().unwrap()).unwrap();
            server
                .run(agent, async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Running {
        address: address.recv().unwrap(),
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// What came back: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is and reads the answer to the end (the request should close the
/// connection); None when the server closed it without answering.
fn exchange(address: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may answer (431) and close before reading all of a huge request.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

fn get(address: SocketAddr, path: &str, extra: &str) -> Answer {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: memtrace\r\n{extra}Connection: close\r\n\r\n");
    exchange(address, request.as_bytes()).expect("an answer")
}

#[test]
fn the_endpoints_answer_and_bad_requests_are_refused_without_stopping_the_server() {
    let server = start(Arc::new(FakeAgent::default()), ServerOptions::default());
    let address = server.address;

    let index = get(address, "/", "");
    assert_eq!(index.status, 200);
    for path in ["/metrics", "/debug/pprof/heap", "/debug/pprof/allocs"] {
        assert!(index.text().contains(&format!("href=\"{path}\"")), "{path}");
    }

    let text = get(address, "/metrics", "");
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(samples(&text.text())
        .iter()
        .any(|s| s.name == "memtrace_findings"));
    let openmetrics = get(
        address,
        "/metrics",
        "Accept: application/openmetrics-text\r\n",
    );
    assert_eq!(
        openmetrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(openmetrics.text().ends_with("# EOF\n"));

    let head = exchange(
        address,
        b"HEAD /metrics HTTP/1.1\r\nHost: memtrace\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let heap = get(address, "/debug/pprof/heap", "");
    assert_eq!(
        (heap.status, heap.body.as_slice()),
        (200, &b"heap profile"[..])
    );
    assert_eq!(
        heap.header("content-type"),
        Some("application/octet-stream")
    );
    let allocs = get(address, "/debug/pprof/allocs", "");
    assert_eq!(allocs.status, 503);
    assert_eq!(allocs.text(), "no call stacks were sampled\n");

    for path in [
        "/nope",
        "/metrics/",
        "/debug/pprof/",
        "/debug/pprof/profile",
        "//metrics",
    ] {
        assert_eq!(get(address, path, "").status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "BREW"] {
        let request = format!("{method} /metrics HTTP/1.1\r\nHost: memtrace\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let answer = exchange(address, request.as_bytes()).unwrap();
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    }
    let with_body = exchange(
        address,
        b"GET /metrics HTTP/1.1\r\nHost: memtrace\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(with_body.status, 413);

    let huge_header = format!("X-Filler: {}\r\n", "a".repeat(64 * 1024));
    assert_eq!(get(address, "/metrics", &huge_header).status, 431);
    let many_headers: String = (0..200).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    assert_eq!(get(address, "/metrics", &many_headers).status, 431);
    let huge_path = format!("/{}", "a".repeat(64 * 1024));
    let status = get(address, &huge_path, "").status;
    assert!(status == 431 || status == 414, "{status}");
    for garbage in [
        &b"HELLO\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let answer = exchange(address, garbage);
        assert!(
            answer.as_ref().is_none_or(|a| a.status == 400),
            "{garbage:?}: {answer:?}"
        );
    }
    // A client that hangs up mid-request.
    drop(TcpStream::connect(address).unwrap().write_all(b"GET /met"));

    // After all of that, scrapes are answered as before.
    assert_eq!(get(address, "/metrics", "").status, 200);
}

/// Connections that send a part of their headers and then hold on.
fn slowloris(address: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: mem")
                .unwrap();
            stream
        })
        .collect()
}

#[test]
fn clients_holding_connections_open_never_delay_another_scrape() {
    let options = ServerOptions {
        max_connections: 8,
        header_timeout: Duration::from_millis(1500),
        ..ServerOptions::default()
    };
    let server = start(Arc::new(FakeAgent::default()), options);
    // Three times the connection limit, each holding a half-sent request; and clients that
    // send a request and never read the answer.
    let mut held = slowloris(server.address, 24);
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: memtrace\r\n\r\n")
            .unwrap();
        held.push(stream);
    }
    thread::sleep(Duration::from_millis(100));
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(get(server.address, "/metrics", "").status, 200);
        times.push(started.elapsed());
        held.extend(slowloris(server.address, 4));
    }
    times.sort_unstable();
    // Promptly: far within the header timeout that would otherwise free a slot.
    assert!(times[2] < Duration::from_millis(500), "{times:?}");

    // The server closes a connection that does not finish its headers in time.
    let mut late = slowloris(server.address, 1).pop().unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = late.read_to_end(&mut rest);
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1200) && closed_after < Duration::from_secs(5),
        "{closed_after:?}"
    );
}

#[test]
fn an_agent_that_does_not_answer_in_time_gets_503_and_holds_up_nothing_else() {
    let agent = Arc::new(FakeAgent::default());
    *agent.delay.lock().unwrap() = Duration::from_secs(3);
    let options = ServerOptions {
        scrape_timeout: Duration::from_millis(300),
        max_connections: 4,
        ..ServerOptions::default()
    };
    let server = start(Arc::clone(&agent) as Arc<dyn Scrape>, options);
    let address = server.address;
    let waiting: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || (Instant::now(), get(address, "/metrics", ""))))
        .collect();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(get(address, "/", "").status, 200);
    assert!(started.elapsed() < Duration::from_millis(250));
    for waiting in waiting {
        let (started, answer) = waiting.join().unwrap();
        assert_eq!(answer.status, 503);
        assert!(answer.text().contains("did not answer within 0.3 s"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    *agent.delay.lock().unwrap() = Duration::ZERO;
    assert_eq!(get(address, "/metrics", "").status, 200);
}

#[test]
fn a_connection_beyond_the_limit_is_closed_when_every_other_is_inside_a_request() {
    let agent = Arc::new(FakeAgent::default());
    *agent.delay.lock().unwrap() = Duration::from_millis(1500);
    let options = ServerOptions {
        max_connections: 2,
        ..ServerOptions::default()
    };
    let server = start(Arc::clone(&agent) as Arc<dyn Scrape>, options);
    let address = server.address;
    let waiting: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || get(address, "/metrics", "").status))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let refused = exchange(
        address,
        b"GET / HTTP/1.1\r\nHost: memtrace\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.is_none(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    for waiting in waiting {
        assert_eq!(waiting.join().unwrap(), 200);
    }
    assert_eq!(get(address, "/", "").status, 200);
}

#[test]
fn listen_addresses() {
    let ok = |text: &str, address: &str| {
        assert_eq!(parse_listen(text), Ok(address.parse().unwrap()), "{text}")
    };
    ok("127.0.0.1:9464", "127.0.0.1:9464");
    ok("9464", "127.0.0.1:9464");
    ok(":9000", "127.0.0.1:9000");
    ok("localhost:9000", "127.0.0.1:9000");
    ok("0.0.0.0:9464", "0.0.0.0:9464");
    ok("[::1]:9464", "[::1]:9464");
    ok("[::]:9464", "[::]:9464");
    ok("10.1.2.3:80", "10.1.2.3:80");
    for bad in [
        "",
        "host:9464",
        "127.0.0.1",
        "127.0.0.1:99999",
        "::1:9464",
        "[::1]",
        "-1",
    ] {
        let error = parse_listen(bad).unwrap_err();
        assert!(
            error.starts_with("--listen wants ADDRESS:PORT"),
            "{bad}: {error}"
        );
    }
    assert_eq!(DEFAULT_LISTEN, "127.0.0.1:9464".parse().unwrap());
}

#[test]
fn binding_a_taken_address_says_which() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(Server::bind(address, ServerOptions::default()))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert!(
        error
            .to_string()
            .starts_with(&format!("could not listen on {address}: ")),
        "{error}"
    );
}

/// A directory of this test's own, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("memtrace-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's Prometheus server, as its own process, on a free loopback port; killed when
/// dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, target: SocketAddr) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: memtrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("log")).unwrap())
            .spawn()
            .unwrap();
        let prometheus = Self {
            child,
            address,
            _dir: dir,
        };
        let started = Instant::now();
        while exchange_quietly(address, "/-/ready").is_none_or(|a| a.status != 200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Prometheus did not start"
            );
            thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// `/api/v1/query`'s result vector.
    fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // HTTP/1.0: Prometheus answers without chunked encoding, which this client does not
        // decode.
        let request =
            format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        let answer = exchange(self.address, request.as_bytes()).expect("Prometheus answers");
        let json: serde_json::Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|error| panic!("{query}: {error}: {}", answer.text()));
        assert_eq!(json["status"], "success", "{query}: {json}");
        json["data"]["result"].as_array().unwrap().clone()
    }
}

fn exchange_quietly(address: SocketAddr, path: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse(&raw)
}

/// Prometheus scrapes the server every second (asking for OpenMetrics, as it does), and its
/// rate of a steadily growing gauge is the true one.
#[test]
fn prometheus_scrapes_the_server_and_sees_the_growth() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let leak_per_s = 1 << 20;
    let agent = Arc::new(FakeAgent {
        leak_per_s,
        ..FakeAgent::default()
    });
    let server = start(agent, ServerOptions::default());
    let prometheus = Prometheus::start(&binary, server.address);
    let series = "memtrace_allocated_bytes{comm=\"slowleak\",kind=\"memfd\"}";
    let started = Instant::now();
    let rate = loop {
        let enough = prometheus.query(&format!("count_over_time({series}[6s]) >= 5"));
        if !enough.is_empty() {
            let result = prometheus.query(&format!("deriv({series}[6s])"));
            break result[0]["value"][1]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "Prometheus never got 5 samples"
        );
        thread::sleep(Duration::from_millis(500));
    };
    let truth = leak_per_s as f64;
    assert!(
        (rate - truth).abs() < 0.2 * truth,
        "deriv {rate} against {truth}"
    );

    let findings = prometheus.query("memtrace_findings{kind=\"growing\",comm=\"slowleak\"}");
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["metric"]["pid"], "4242");
    let up = prometheus.query("up{job=\"memtrace\"}");
    assert_eq!(up[0]["value"][1], "1");
    // Every family made it, counters with their _total name.
    let families = prometheus.query("count by (__name__) ({__name__=~\"memtrace_.+|process_.+\"})");
    let mut names: Vec<&str> = families
        .iter()
        .map(|family| family["metric"]["__name__"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut expected = crate::agent::metrics::FAMILIES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);

    // Every query of the shipped dashboard finds series in what Prometheus scraped (with
    // Grafana's variables as "all", and rate windows short enough for these few seconds).
    let dashboard =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/memtrace.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    for query in queries {
        let query = match query.strip_prefix("label_values(") {
            Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
            None => query,
        };
        let query = query
            .replace("$__rate_interval", "5s")
            .replace("$instance", ".*")
            .replace("$comm", ".*")
            .replace("$cgroup", ".*");
        assert!(
            !prometheus.query(&query).is_empty(),
            "the dashboard's {query} finds nothing"
        );
    }
}

/// An agent serving a gzipped profile where `leak_16mib_blocks` holds 64 MiB and
/// `small_helper` 1 MiB.
struct ProfileAgent;

impl Scrape for ProfileAgent {
    fn metrics(&self) -> Result<MetricsInput, Unavailable> {
        Ok(MetricsInput::default())
    }

    fn heap_profile(&self) -> Result<Vec<u8>, Unavailable> {
        use crate::report::export::pprof::proto::*;
        use prost::Message as _;
        let strings = [
            "",
            "inuse_space",
            "bytes",
            "leak_16mib_blocks",
            "small_helper",
        ];
        let profile = Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            default_sample_type: 1,
            sample: vec![
                Sample {
                    location_id: vec![1],
                    value: vec![64 << 20],
                    ..Sample::default()
                },
                Sample {
                    location_id: vec![2],
                    value: vec![1 << 20],
                    ..Sample::default()
                },
            ],
            location: (1..=2)
                .map(|id| Location {
                    id,
                    line: vec![Line {
                        function_id: id,
                        ..Line::default()
                    }],
                    ..Location::default()
                })
                .collect(),
            function: (1..=2)
                .map(|id| Function {
                    id,
                    name: 2 + id as i64,
                    ..Function::default()
                })
                .collect(),
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            ..Profile::default()
        };
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&profile.encode_to_vec()).unwrap();
        Ok(encoder.finish().unwrap())
    }

    fn allocs_profile(&self) -> Result<Vec<u8>, Unavailable> {
        self.heap_profile()
    }
}

/// `go tool pprof` fetches the heap endpoint as it fetches Go's own (path, content type,
/// gzipped body) and ranks what it holds.
#[test]
fn go_tool_pprof_reads_the_heap_endpoint() {
    let Some(go) = tool("go") else {
        return;
    };
    let server = start(Arc::new(ProfileAgent), ServerOptions::default());
    let scratch = TempDir::new("pprof");
    for path in ["/debug/pprof/heap", "/debug/pprof/allocs"] {
        let output = Command::new(&go)
            .args(["tool", "pprof", "-top"])
            .arg(format!("http://{}{path}", server.address))
            // pprof saves what it fetched under $PPROF_TMPDIR (else $HOME/pprof).
            .env("PPROF_TMPDIR", &scratch.0)
            .env("HOME", &scratch.0)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The table's first row after its header ("flat  flat%  sum%  cum  cum%").
        let rows: Vec<&str> = stdout
            .lines()
            .skip_while(|line| !line.trim_start().starts_with("flat"))
            .skip(1)
            .collect();
        assert!(
            rows[0].trim_end().ends_with("leak_16mib_blocks"),
            "{stdout}"
        );
        assert!(rows[0].trim_start().starts_with("64MB"), "{stdout}");
        assert!(rows[1].trim_end().ends_with("small_helper"), "{stdout}");
    }
}
