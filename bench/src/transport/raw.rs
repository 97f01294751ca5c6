//! The baseline: a plain TCP socket pump on the same loopback, the same CPU
//! placement and the same measurement window — one thread writing buffers
//! of the size our frames averaged (one write call each, TCP_NODELAY like
//! ours), one thread reading and discarding. What it reaches is what the
//! kernel's loopback allows a sender that does no work at all; our transport
//! is measured as a fraction of it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::placement;

/// Bytes the receiving thread asks for per read.
const READ_BYTES: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct RawResult {
    pub write_bytes: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl RawResult {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

pub fn run(write_bytes: usize, warmup: Duration, duration: Duration) -> Result<RawResult, String> {
    assert!(write_bytes > 0);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("raw pump: bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("raw pump: {e}"))?;
    let read = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let read = read.clone();
        std::thread::Builder::new()
            .name("bench-raw-rx".into())
            .spawn(move || -> Result<(), String> {
                placement::pin_thread(1);
                let (mut s, _) = listener.accept().map_err(|e| format!("raw pump: accept: {e}"))?;
                let mut buf = vec![0u8; READ_BYTES];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => {
                            read.fetch_add(n as u64, Relaxed);
                        }
                        Err(e) => return Err(format!("raw pump: read: {e}")),
                    }
                }
            })
            .map_err(|e| format!("raw pump: spawn: {e}"))?
    };
    let writer = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("bench-raw-tx".into())
            .spawn(move || -> Result<(), String> {
                placement::pin_thread(0);
                let mut s = TcpStream::connect(addr).map_err(|e| format!("raw pump: connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| format!("raw pump: nodelay: {e}"))?;
                let buf = vec![0xa5u8; write_bytes];
                while !stop.load(Relaxed) {
                    s.write_all(&buf).map_err(|e| format!("raw pump: write: {e}"))?;
                }
                Ok(())
            })
            .map_err(|e| format!("raw pump: spawn: {e}"))?
    };
    std::thread::sleep(warmup);
    let (b0, t0) = (read.load(Relaxed), Instant::now());
    std::thread::sleep(duration);
    let (b1, t1) = (read.load(Relaxed), Instant::now());
    stop.store(true, Relaxed);
    writer.join().map_err(|_| "raw pump: the writer panicked".to_string())??;
    reader.join().map_err(|_| "raw pump: the reader panicked".to_string())??;
    Ok(RawResult { write_bytes, bytes: b1 - b0, elapsed: t1 - t0 })
}
