//! Where the benchmark's two sides run: on CPUs 0 and 1 when the machine has
//! two or more, so sender and receiver never share a core (and ours and the
//! raw pump get the same placement); unpinned otherwise.

use glommio::Placement;

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// glommio placement of side `i` (0: sender, 1: receiver).
pub(crate) fn executor(i: usize) -> Placement {
    if cpus() >= 2 {
        Placement::Fixed(i)
    } else {
        Placement::Unbound
    }
}

/// Pins the calling std thread like `executor(i)` would.
pub(crate) fn pin_thread(i: usize) {
    if cpus() < 2 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity only read and write that local value.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
