//! What the tests of the `ringraft` binary share: starting it as a child
//! that dies with the test, free port ranges, and deadlines (a hang fails
//! in seconds instead of eating CI's time).
#![allow(dead_code)] // (each test file uses its own part)

pub mod pd_cluster;

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A base port whose local-cluster range (3 stores × 128 ports, the
/// metrics ports after them, then two more stores) is free now, below the
/// ephemeral ports.
pub fn free_base_port(salt: u32) -> u16 {
    for attempt in 0..200u32 {
        let base = 10_000 + ((std::process::id() % 89) * 211 + (salt * 50 + attempt) * 1_009) % 20_000;
        let ports: Vec<u32> = (0..3u32)
            .flat_map(|s| [base + s * 128, base + s * 128 + 64])
            .chain((0..5).map(|i| base + 384 + i)) // metrics ports, PD and PD's metrics
            .chain((0..2u32).flat_map(|s| [base + 512 + s * 128, base + 576 + s * 128])) // stores 4 and 5
            .collect();
        if ports.iter().all(|p| TcpListener::bind(("127.0.0.1", *p as u16)).is_ok()) {
            return base as u16;
        }
    }
    panic!("no free port range on loopback");
}

/// A child killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn ringraft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringraft"));
    // SAFETY: prctl in the child before exec only sets its parent-death signal
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Runs `f` on its own thread and fails if it takes longer than `limit`.
pub fn with_deadline<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it ends"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after {limit:?}"),
    }
}

/// Waits for `child` to exit, failing the test after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
