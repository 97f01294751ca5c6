//! The status endpoint stores and PD serve their Prometheus metrics on
//! (`GET /metrics`, text format): a thread of its own, one request per
//! connection, the body rendered on each request by the caller's closure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line read (the rest of a request is ignored).
const STATUS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long a client may take to send its request line.
const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The status endpoint's thread; `stop` closes its port and joins it.
pub struct StatusServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl StatusServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(self) {
        self.stopping.store(true, Relaxed);
        // wake the blocking accept; it sees the flag and ends, closing the port
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = self.thread.join();
    }
}

/// Serves `GET /metrics` on `addr` (the body from `render`) until stopped.
pub fn serve_metrics(
    addr: SocketAddr,
    thread_name: String,
    render: impl Fn() -> String + Send + 'static,
) -> std::io::Result<StatusServer> {
    serve(addr, thread_name, move |method, target| match (method, target) {
        ("GET", "/metrics") => StatusReply::ok(render()),
        _ => StatusReply::not_found("try GET /metrics\n"),
    })
}

/// What a status request is answered: the HTTP status ("200 OK") and a text body.
pub struct StatusReply {
    pub status: &'static str,
    pub body: String,
}

impl StatusReply {
    pub fn ok(body: String) -> StatusReply {
        StatusReply { status: "200 OK", body }
    }

    pub fn not_found(body: &str) -> StatusReply {
        StatusReply { status: "404 Not Found", body: body.to_string() }
    }
}

/// Serves requests on `addr` until stopped: `handle` gets each request's
/// method and target (`"GET"`, `"/metrics"`; the target with its query
/// string) and answers it. Headers and bodies of requests are not read.
pub fn serve(
    addr: SocketAddr,
    thread_name: String,
    handle: impl Fn(&str, &str) -> StatusReply + Send + 'static,
) -> std::io::Result<StatusServer> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new().name(thread_name).spawn(move || {
        for stream in listener.incoming() {
            if flag.load(Relaxed) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(STATUS_READ_TIMEOUT));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream).take(STATUS_REQUEST_BYTES_MAX as u64);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let StatusReply { status, body } = handle(method, target);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(StatusServer { addr: bound, stopping, thread })
}
