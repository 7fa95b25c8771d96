//! The agent's HTTP server (`memtrace agent --listen [ADDR]`): what Prometheus, Parca,
//! Pyroscope (Grafana Alloy) and `go tool pprof` pull.
//!
//! - `/metrics`: the text format 0.0.4, or OpenMetrics for `Accept:
//!   application/openmetrics-text` ([`crate::agent::metrics`]);
//! - `/debug/pprof/heap`: in-use mapped bytes and regions by call stack, and
//!   `/debug/pprof/allocs`: what was allocated since the agent started (gzipped
//!   profile.proto, the paths and format of Go's net/http/pprof, which those scrapers read);
//! - `/`: a small page listing them. Anything else is 404; methods other than GET and HEAD
//!   are 405; a request with a body is 413.
//!
//! hyper's HTTP/1 server on the tokio runtime memtrace already has, without a framework: four
//! fixed paths need no router. What a hostile or broken client can do is bounded:
//! - headers: 16 KiB and 64 fields at most (431 past that), read within 10 s of the
//!   connection's first byte or of its previous response (then the connection is closed);
//! - connections: 64 at most. One more evicts the oldest that is not inside a request
//!   (waiting for its headers, idle between requests, or slow to read its response), so
//!   clients holding connections open never keep a scrape out; when every one is inside a
//!   request, the new connection is closed at once;
//! - a connection lives 5 minutes at most (a client that never reads its response);
//! - a scrape waits 10 s at most for the agent (503 after that).
//!
//! Each connection is its own task, and the agent is asked on a blocking thread
//! ([`Scrape`]'s methods may block), so one client never delays another's scrape.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::AbortHandle};

use crate::agent::metrics::{Format, Metrics, MetricsInput};

/// Where `--listen` without an address listens: loopback only, Prometheus's port for
/// memtrace's kind of exporter.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// What the agent could not answer (a scrape gets 503 and this line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What the server asks the agent at each request. The methods are called on a blocking
/// thread of the runtime, never on the model's: they may wait for the model's thread to
/// answer ([`crate::agent::http_handoff`] does that with a deadline).
pub trait Scrape: Send + Sync + 'static {
    /// The figures of this scrape, from the model and the reports.
    fn metrics(&self) -> Result<MetricsInput, Unavailable>;
    /// `/debug/pprof/heap`: gzipped profile.proto, in-use space by default
    /// (`report::export::pprof::render`).
    fn heap_profile(&self) -> Result<Vec<u8>, Unavailable>;
    /// `/debug/pprof/allocs`: the same call stacks, allocated space since the agent started.
    fn allocs_profile(&self) -> Result<Vec<u8>, Unavailable>;
}

/// `--listen`'s address: `HOST:PORT` with an IP address (`[::1]:9464` for IPv6),
/// `localhost:PORT`, or a port alone (`9464`, `:9464`) on loopback. Only an address named
/// explicitly is anything but loopback.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let loopback = |port: &str| {
        port.parse::<u16>()
            .ok()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    };
    let parsed = match text.rsplit_once(':') {
        None => loopback(text),
        Some(("" | "localhost", port)) => loopback(port),
        Some(_) => text.parse().ok(),
    };
    parsed.ok_or_else(|| {
        format!(
            "--listen wants ADDRESS:PORT or a port (127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464, \
             9464), not {text:?}"
        )
    })
}

/// The server's bounds; [`Default`] has the module's figures.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub max_connections: usize,
    /// Headers larger than this are refused (431).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// To send a request's headers, from the connection's first byte or its previous
    /// response.
    pub header_timeout: Duration,
    /// How long a scrape waits for the agent.
    pub scrape_timeout: Duration,
    /// The longest a connection lives.
    pub connection_lifetime: Duration,
    /// `--metrics-top`.
    pub metrics_top: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_timeout: Duration::from_secs(10),
            scrape_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            metrics_top: crate::agent::metrics::DEFAULT_TOP,
        }
    }
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    options: ServerOptions,
}

impl Server {
    /// Binds `address` (fails there, before the agent starts tracing, if it is taken).
    pub async fn bind(address: SocketAddr, options: ServerOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("could not listen on {address}: {error}"),
            )
        })?;
        Ok(Self { listener, options })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting and drops every connection.
    /// Errors of one connection, or of accepting one, never end it.
    pub async fn run(self, scrape: Arc<dyn Scrape>, shutdown: impl Future<Output = ()>) {
        let state = Arc::new(State {
            scrape,
            metrics: Mutex::new(Metrics::new(self.options.metrics_top)),
            options: self.options,
        });
        let connections = Arc::new(Connections::default());
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and the like: wait for connections to close rather than spin.
                    log::warn!("/metrics server: could not accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !connections.make_room(state.options.max_connections) {
                log::debug!(
                    "/metrics server: every connection is inside a request; closing a new one"
                );
                continue;
            }
            let busy = Arc::new(AtomicBool::new(false));
            let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
            let task = tokio::spawn(serve_connection(
                stream,
                Arc::clone(&state),
                Arc::clone(&busy),
                Arc::clone(&connections),
                id,
            ));
            connections.add(id, busy, task.abort_handle());
        }
        connections.abort_all();
    }
}

struct State {
    scrape: Arc<dyn Scrape>,
    /// Shared by every scraper: its counters remember the previous scrape.
    metrics: Mutex<Metrics>,
    options: ServerOptions,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<VecDeque<Connection>>,
}

struct Connection {
    id: u64,
    /// Inside a request: its handler is running.
    busy: Arc<AtomicBool>,
    abort: AbortHandle,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Connection>> {
        // A connection task that panicked cannot leave the list inconsistent: each change
        // is one push or remove.
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether one more connection may open, after closing the oldest not inside a request
    /// if the limit is reached.
    fn make_room(&self, limit: usize) -> bool {
        let mut open = self.lock();
        if open.len() < limit {
            return true;
        }
        match open.iter().position(|c| !c.busy.load(Ordering::Acquire)) {
            Some(oldest) => {
                if let Some(evicted) = open.remove(oldest) {
                    evicted.abort.abort();
                }
                true
            }
            None => false,
        }
    }

    fn add(&self, id: u64, busy: Arc<AtomicBool>, abort: AbortHandle) {
        let mut open = self.lock();
        // The task may already be over (a client that connected and left at once).
        if !abort.is_finished() {
            open.push_back(Connection { id, busy, abort });
        }
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        if let Some(index) = open.iter().position(|c| c.id == id) {
            open.remove(index);
        }
    }

    fn abort_all(&self) {
        for connection in self.lock().drain(..) {
            connection.abort.abort();
        }
    }
}

/// Takes the connection off the list however its task ends (done, failed, or aborted).
struct Leaving {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        self.connections.remove(self.id);
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    busy: Arc<AtomicBool>,
    connections: Arc<Connections>,
    id: u64,
) {
    let _leaving = Leaving { connections, id };
    let options = &state.options;
    let service = {
        let state = Arc::clone(&state);
        service_fn(move |request| {
            let state = Arc::clone(&state);
            let busy = Arc::clone(&busy);
            async move {
                busy.store(true, Ordering::Release);
                let response = respond(&state, request).await;
                busy.store(false, Ordering::Release);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_header_size(options.max_header_bytes)
        .max_headers(options.max_headers)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(options.connection_lifetime, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => log::debug!("/metrics server: a connection failed: {error}"),
        Err(_) => log::debug!("/metrics server: a connection outlived its lifetime"),
    }
}

const INDEX: &str = "<!DOCTYPE html>
<html><head><meta charset=\"utf-8\"><title>memtrace agent</title></head><body>
<h1>memtrace agent</h1>
<ul>
<li><a href=\"/metrics\">/metrics</a>: Prometheus text format, or OpenMetrics for Accept: application/openmetrics-text</li>
<li><a href=\"/debug/pprof/heap\">/debug/pprof/heap</a>: in-use mapped bytes and regions by call stack (pprof)</li>
<li><a href=\"/debug/pprof/allocs\">/debug/pprof/allocs</a>: bytes and regions allocated since the agent started (pprof)</li>
</ul>
</body></html>
";

async fn respond(state: &Arc<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if has_body(&request) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a request has no body here\n",
        );
    }
    let answer = match request.uri().path() {
        "/" => Ok((
            "text/html; charset=utf-8",
            Bytes::from_static(INDEX.as_bytes()),
        )),
        "/metrics" => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok());
            let format = Format::negotiate(accept);
            let shared = Arc::clone(state);
            ask(state, move || {
                let input = shared.scrape.metrics()?;
                let mut metrics = shared
                    .metrics
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                Ok(Bytes::from(metrics.render(input, format)))
            })
            .await
            .map(|body| (format.content_type(), body))
        }
        "/debug/pprof/heap" => {
            let scrape = Arc::clone(&state.scrape);
            ask(state, move || scrape.heap_profile().map(Bytes::from))
                .await
                .map(|body| (PROFILE_CONTENT_TYPE, body))
        }
        "/debug/pprof/allocs" => {
            let scrape = Arc::clone(&state.scrape);
            ask(state, move || scrape.allocs_profile().map(Bytes::from))
                .await
                .map(|body| (PROFILE_CONTENT_TYPE, body))
        }
        _ => return plain(StatusCode::NOT_FOUND, "not found: see /\n"),
    };
    match answer {
        Ok((content_type, body)) => {
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(Unavailable(why)) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
    }
}

/// What Go's net/http/pprof serves a profile as: the body is gzipped profile.proto itself
/// (no Content-Encoding), which every reader of the format expects.
const PROFILE_CONTENT_TYPE: &str = "application/octet-stream";

/// Runs `work` (which asks the agent) on a blocking thread, within the scrape timeout.
async fn ask(
    state: &Arc<State>,
    work: impl FnOnce() -> Result<Bytes, Unavailable> + Send + 'static,
) -> Result<Bytes, Unavailable> {
    let timeout = state.options.scrape_timeout;
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Unavailable("the agent failed to answer".into())),
        Err(_) => Err(Unavailable(format!(
            "the agent did not answer within {} s",
            timeout.as_secs_f64()
        ))),
    }
}

fn has_body(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
