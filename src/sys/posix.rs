//! The POSIX backend: only what macOS and FreeBSD also have. Wake-ups are pipes, a deadline is a
//! thread that writes to a pipe when it passes, signals reach a pipe from their handler (the
//! self-pipe), an anonymous file is an unlinked temporary one, a child watches a pipe from its
//! parent instead of being signalled when the parent dies, and a client's end is a lock it held
//! (`posix_owner.rs`).

use super::common::{self, set_nonblocking};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub(super) use super::posix_owner::ClientMark;

pub(super) const NAME: &str = "posix";

fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD on an fd of the caller's.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Reads and discards what a non-blocking fd holds now.
fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a local buffer from a non-blocking fd of ours.
    while unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) } > 0 {}
}

/// Writes one byte, not waiting: a full pipe is readable already.
fn poke(fd: RawFd) {
    // SAFETY: a one-byte write from a static to a non-blocking fd of ours.
    unsafe { libc::write(fd, b"!".as_ptr() as *const libc::c_void, 1) };
}

/// A pipe whose both ends do not block: (read, write).
fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = common::pipe()?;
    set_nonblocking(r.as_raw_fd());
    set_nonblocking(w.as_raw_fd());
    Ok((r, w))
}

pub(super) struct Wakeup {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wakeup {
    pub(super) fn new() -> io::Result<Wakeup> {
        let (read, write) = nonblocking_pipe()?;
        Ok(Wakeup { read, write })
    }
    pub(super) fn wake(&self) {
        poke(self.write.as_raw_fd())
    }
    pub(super) fn clear(&self) {
        drain(self.read.as_raw_fd())
    }
    pub(super) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

#[derive(Default)]
struct Due {
    at: Option<Instant>,
    closed: bool,
}

/// The deadline's thread sleeps on the condvar until `at`, then writes to the pipe.
pub(super) struct Deadline {
    due: Arc<(Mutex<Due>, Condvar)>,
    read: OwnedFd,
}

impl Deadline {
    pub(super) fn new() -> io::Result<Deadline> {
        let (read, write) = nonblocking_pipe()?;
        let due: Arc<(Mutex<Due>, Condvar)> = Arc::default();
        let theirs = due.clone();
        std::thread::Builder::new().name("deadline".into()).spawn(move || keep_deadline(&theirs, write))?;
        Ok(Deadline { due, read })
    }
    pub(super) fn set(&self, after: Option<Duration>) {
        let mut due = self.due.0.lock().unwrap_or_else(|e| e.into_inner());
        due.at = after.map(|d| Instant::now() + d);
        self.due.1.notify_one();
    }
    pub(super) fn clear(&self) {
        drain(self.read.as_raw_fd())
    }
    pub(super) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.due.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.due.1.notify_one();
    }
}

fn keep_deadline(due: &(Mutex<Due>, Condvar), write: OwnedFd) {
    let mut state = due.0.lock().unwrap_or_else(|e| e.into_inner());
    while !state.closed {
        state = match state.at {
            None => due.1.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(at) if at <= Instant::now() => {
                state.at = None;
                poke(write.as_raw_fd());
                state
            }
            Some(at) => due.1.wait_timeout(state, at - Instant::now()).unwrap_or_else(|e| e.into_inner()).0,
        };
    }
}

/// The write end of the self-pipe, for the signal handler.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn to_pipe(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe does not block.
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), &byte as *const u8 as *const libc::c_void, 1) };
}

pub(super) struct SignalEvents {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalEvents {
    pub(super) fn new(signals: &[i32]) -> io::Result<SignalEvents> {
        let (read, write) = nonblocking_pipe()?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        for &s in signals {
            // SAFETY: a handler that only writes to the pipe; SA_RESTART so other calls go on.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = to_pipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(s, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalEvents { read, _write: write })
    }
    pub(super) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
    pub(super) fn read(&self) -> Vec<i32> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer from our non-blocking pipe.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                return got;
            }
            got.extend(buf[..n as usize].iter().map(|&b| b as i32));
        }
    }
}

pub(super) fn anonymous_file(size: usize) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 8];
    random_bytes(&mut seed)?;
    let path =
        std::env::temp_dir().join(format!("llmspell-{}-{:x}", std::process::id(), u64::from_ne_bytes(seed)));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    let _ = std::fs::remove_file(&path);
    file.set_len(size as u64)?;
    Ok(file.into())
}

pub(super) fn end_with_parent(_signal: i32) {}

pub(super) fn arm_parent_watch(read: RawFd, write: RawFd) {
    // SAFETY: closing this child's copy of the parent's end: only the parent holds it now.
    unsafe { libc::close(write) };
    // The watcher starts with every signal blocked (a thread inherits its creator's mask): a signal
    // sent to the run must reach the thread running Lua, whose SIGINT handler sets a hook that must
    // never race with Lua clearing it (a handler on this thread did: the script was interrupted twice).
    // SAFETY: sigfillset and pthread_sigmask on locals; the old mask is restored right after.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let spawned = std::thread::Builder::new().name("parent-watch".into()).spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: a blocking read into a local byte; the parent never writes: it returns when the
        // parent's end closes (the parent has ended).
        while unsafe { libc::read(read, b.as_mut_ptr() as *mut libc::c_void, 1) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        // SAFETY: ending this process, as the parent's death does on Linux.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    });
    // SAFETY: restoring this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if spawned.is_err() {
        // SAFETY: leaving a forked child that cannot be watched.
        unsafe { libc::_exit(1) };
    }
}

pub(super) fn close_fds_from(first: RawFd, keep: &[RawFd]) {
    // SAFETY: getrlimit into a local.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    let end = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        (lim.rlim_cur as u64).clamp(256, 65536) as RawFd
    } else {
        4096
    };
    common::close_each(first, end, keep);
}

pub(super) fn clear_environment() {
    for (key, _) in std::env::vars_os() {
        // SAFETY: a single-threaded (freshly forked) process changes its own environment.
        unsafe { std::env::remove_var(key) };
    }
}

pub(super) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Read in a forked child (only umask and write before `_exit`: async-signal-safe), so this
/// process's umask is never changed, not even for a moment.
pub(super) fn current_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let Ok((read, write)) = common::pipe() else { return 0o022 };
        // SAFETY: the child only calls umask, write and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                let m = libc::umask(0o022) as u32;
                libc::write(write.as_raw_fd(), &m as *const u32 as *const libc::c_void, 4);
                libc::_exit(0);
            }
        }
        drop(write);
        let mut m = 0o022u32;
        if pid > 0 {
            // SAFETY: a 4-byte read into a local; reaping our own child.
            unsafe {
                libc::read(read.as_raw_fd(), &mut m as *mut u32 as *mut libc::c_void, 4);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        m
    })
}

pub(super) fn last_signal() -> i32 {
    31
}

pub(super) fn interrupt_signal() -> i32 {
    libc::SIGUSR2
}

pub(super) fn accept_nonblocking(listener: RawFd) -> Option<OwnedFd> {
    // SAFETY: accept on the caller's non-blocking listener.
    let fd = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
    if fd < 0 {
        return None;
    }
    set_cloexec(fd);
    set_nonblocking(fd);
    // SAFETY: a fresh fd, owned from here on.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let got = common::recvmsg(fd, buf, 0)?;
    for f in &got.1 {
        set_cloexec(f.as_raw_fd());
    }
    Ok(got)
}

pub(super) fn quick_ack(_tcp: &std::net::TcpStream) {}
