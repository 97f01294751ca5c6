//! Socket set-up glommio does not do for us.
//!
//! - Listening: glommio's `TcpListener::bind` always sets SO_REUSEPORT, so a
//!   second endpoint (or a second process) binding the same port succeeds
//!   silently and the kernel splits connections between them. We bind with
//!   std (SO_REUSEADDR only, so a restart is not blocked by TIME_WAIT) and
//!   hand the socket to glommio: a port in use is an error at start.
//! - Liveness: raft connections carry data one way, so a peer that vanished
//!   (power loss, a partition that outlived its TCP state) is never noticed
//!   by reading. Keepalive probes find a dead peer within
//!   `KEEPALIVE_IDLE + KEEPALIVE_COUNT × KEEPALIVE_INTERVAL`, and
//!   TCP_USER_TIMEOUT bounds how long written data may stay unacknowledged.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use glommio::net::TcpListener;

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection is declared dead.
pub const KEEPALIVE_COUNT: u32 = 3;
/// Longest time written data may stay unacknowledged before the kernel drops the connection.
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds a listener that refuses a port someone else holds.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    // SAFETY: the fd is a listening TCP socket we own and give away here.
    Ok(unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) })
}

fn set(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keepalive and the user timeout on a connected socket.
pub fn tune(socket: &impl AsRawFd) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE.as_secs() as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL.as_secs() as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT.as_millis() as libc::c_int)
}
