//! Ctrl-C and SIGTERM as an orderly stop: the signals are blocked in every
//! thread (set before threads start, inherited) and one place waits for them
//! (a store stops its shards, a local cluster its stores, a bench its load).

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts after.
pub fn block() {
    let s = set();
    // SAFETY: changes only this thread's signal mask
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
}

/// Waits for SIGINT or SIGTERM (blocked first with `block`); its name.
pub fn wait() -> &'static str {
    let s = set();
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait reads our set and writes the signal number
    unsafe { libc::sigwait(&s, &mut sig) };
    if sig == libc::SIGINT {
        "interrupted"
    } else {
        "terminated"
    }
}

/// Blocks the signals and starts a thread that sets `flag` when one comes
/// (for a process whose main thread has other work: the bench).
pub fn flag_on_signal(flag: &'static std::sync::atomic::AtomicBool) {
    block();
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let sig = wait();
        eprintln!("ringraft: {sig}: stopping");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    if let Err(e) = spawned {
        eprintln!("ringraft: no signal thread ({e}); Ctrl-C will not stop in order");
    }
}
