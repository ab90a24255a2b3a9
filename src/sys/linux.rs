//! The Linux backend: eventfd, timerfd, signalfd, memfd, pidfd, PR_SET_PDEATHSIG, accept4,
//! MSG_CMSG_CLOEXEC, close_range, getrandom, /proc, real-time signals and TCP_QUICKACK.

use super::common;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub(super) const NAME: &str = "linux";

fn owned(fd: i64, what: &str) -> io::Result<OwnedFd> {
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cannot create {what}: {e}")));
    }
    // SAFETY: a fresh fd the call just returned, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads (and so resets) an eventfd's or timerfd's counter.
fn read_counter(fd: RawFd) {
    let mut n = 0u64;
    // SAFETY: an 8-byte read into a local from our own non-blocking fd.
    unsafe { libc::read(fd, &mut n as *mut u64 as *mut libc::c_void, 8) };
}

pub(super) struct Wakeup(OwnedFd);

impl Wakeup {
    pub(super) fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd has no memory-safety preconditions.
        owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } as i64, "an eventfd")
            .map(Wakeup)
    }
    pub(super) fn wake(&self) {
        let one = 1u64;
        // SAFETY: an 8-byte write of a local to our own eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
    pub(super) fn clear(&self) {
        read_counter(self.0.as_raw_fd())
    }
    pub(super) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub(super) struct Deadline(OwnedFd);

impl Deadline {
    pub(super) fn new() -> io::Result<Deadline> {
        // SAFETY: creating a timerfd; the result is checked.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        owned(fd as i64, "a timer").map(Deadline)
    }
    pub(super) fn set(&self, after: Option<Duration>) {
        // A zero it_value disarms: "now" is the smallest non-zero time.
        let after = after.map_or(Duration::ZERO, |d| d.max(Duration::from_nanos(1)));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: after.as_secs() as _, tv_nsec: after.subsec_nanos() as _ },
        };
        // SAFETY: our own timerfd and a local itimerspec.
        unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }
    pub(super) fn clear(&self) {
        read_counter(self.0.as_raw_fd())
    }
    pub(super) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub(super) struct SignalEvents(OwnedFd);

impl SignalEvents {
    pub(super) fn new(signals: &[i32]) -> io::Result<SignalEvents> {
        // SAFETY: plain signal-mask and signalfd calls on a local set.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        owned(fd as i64, "a signalfd").map(SignalEvents)
    }
    pub(super) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
    pub(super) fn read(&self) -> Vec<i32> {
        let mut got = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data; reading into a local one.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: as above.
            let n = unsafe { libc::read(self.fd(), &mut info as *mut _ as *mut libc::c_void, size) };
            if n <= 0 {
                return got;
            }
            got.push(info.ssi_signo as i32);
        }
    }
}

pub(super) fn anonymous_file(size: usize) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static name.
    let fd = owned(unsafe { libc::memfd_create(c"llmspell".as_ptr(), libc::MFD_CLOEXEC) } as i64, "a memfd")?;
    let file = std::fs::File::from(fd);
    file.set_len(size as u64)?;
    Ok(file.into())
}

pub(super) fn end_with_parent(signal: i32) {
    // SAFETY: prctl is async-signal-safe.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) };
}

pub(super) fn arm_parent_watch(read: RawFd, write: RawFd) {
    end_with_parent(libc::SIGKILL);
    // SAFETY: closing the pipe (the system watches the parent here); getppid and _exit cannot fail.
    unsafe {
        libc::close(read);
        libc::close(write);
        // The parent may have ended before the call: then we are some reaper's child.
        if libc::getppid() == 1 {
            libc::_exit(1);
        }
    }
}

pub(super) fn close_fds_from(first: RawFd, keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&k| k >= first).collect();
    keep.sort_unstable();
    let mut from = first as u32;
    for k in keep.into_iter().map(|k| k as u32).chain([u32::MAX]) {
        if k > from {
            let last = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: closing a range of fds the (freshly forked) caller does not use.
            if unsafe { libc::syscall(libc::SYS_close_range, from, last, 0u32) } != 0 {
                common::close_each(from as RawFd, last.min(4096) as RawFd, &[]);
            }
        }
        from = k.saturating_add(1);
    }
}

pub(super) fn clear_environment() {
    // SAFETY: called in a single-threaded (freshly forked) process.
    unsafe { libc::clearenv() };
}

pub(super) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: getrandom into the caller's buffer of that length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}

pub(super) fn last_signal() -> i32 {
    libc::SIGRTMAX()
}

pub(super) fn interrupt_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

pub(super) fn accept_nonblocking(listener: RawFd) -> Option<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: accept4 on the caller's non-blocking listener.
    let fd = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
    owned(fd as i64, "a connection").ok()
}

pub(super) fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    common::recvmsg(fd, buf, libc::MSG_CMSG_CLOEXEC)
}

pub(super) fn quick_ack(tcp: &std::net::TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on the caller's socket, with a c_int option value.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A client's start time (field 22 of /proc/PID/stat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ClientMark {
    start: u64,
}

impl ClientMark {
    pub(super) fn current() -> serde_json::Value {
        let pid = std::process::id();
        serde_json::json!({ "pid": pid, "start": start_time(pid as i32).unwrap_or(0) })
    }
    pub(super) fn of(owner: &serde_json::Value) -> Option<ClientMark> {
        Some(ClientMark { start: owner["start"].as_u64()? })
    }
    pub(super) fn alive(&self, pid: i32) -> bool {
        start_time(pid) == Some(self.start)
    }
    pub(super) fn watch_end(&self, pid: i32) -> io::Result<Option<OwnedFd>> {
        // SAFETY: the pidfd_open system call; the result is checked before being owned.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        let fd = owned(fd, "a pidfd")?;
        // The pid may have been reused between the look and the open: this is that very process
        // only if it still has its start time.
        Ok(self.alive(pid).then_some(fd))
    }
    #[cfg(test)]
    pub(super) fn other(&self) -> ClientMark {
        ClientMark { start: self.start + 1 }
    }
}

/// A process's start time in clock ticks since boot; None if it does not exist or has ended (a
/// zombie not yet reaped by its parent).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}
