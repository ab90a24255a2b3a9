//! The platform layer: what the rest of llmspell needs from the operating system, named for that
//! need rather than for a system call. Two backends sit behind it:
//! - `linux` (the default on Linux): the Linux facilities the kernel was written with;
//! - `posix` (every other Unix, and Linux with the cargo feature `portable`): only what macOS and
//!   FreeBSD also have — poll, pipes with fcntl, a self-pipe for signals, flock, unlinked files.
//!
//! Linux-only facilities are named only in files whose path says `linux`; `tests/platform_scan.rs`
//! fails the build's tests otherwise. Both backends keep the same promises (see each item).

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
use linux as imp;

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
mod posix;
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
mod posix_owner;
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
use posix as imp;

mod common;
pub use common::{pipe, set_nonblocking, wait_readable};

/// The backend this binary was built with, for `--version`-like reports and the bench.
pub const BACKEND: &str = imp::NAME;

/// A wakeable wait: `fd` becomes readable after `wake`, and stays so until `clear`. Any number of
/// wakes before a clear count as one.
pub struct Wakeup(imp::Wakeup);

impl Wakeup {
    pub fn new() -> io::Result<Wakeup> {
        imp::Wakeup::new().map(Wakeup)
    }
    /// Safe from any thread, never blocks.
    pub fn wake(&self) {
        self.0.wake()
    }
    /// Resets it: the fd is no longer readable (until the next wake).
    pub fn clear(&self) {
        self.0.clear()
    }
    pub fn fd(&self) -> RawFd {
        self.0.fd()
    }
}

/// A deadline: `fd` becomes readable once the time set has passed, and stays so until `clear`.
/// Setting it again moves it; `set(None)` cancels one that has not passed yet.
pub struct Deadline(imp::Deadline);

impl Deadline {
    pub fn new() -> io::Result<Deadline> {
        imp::Deadline::new().map(Deadline)
    }
    pub fn set(&self, after: Option<Duration>) {
        self.0.set(after)
    }
    pub fn clear(&self) {
        self.0.clear()
    }
    pub fn fd(&self) -> RawFd {
        self.0.fd()
    }
}

/// Signals turned into a readable event, for a single-threaded process that waits in `poll` (the
/// runner zygote). Once made, the signals no longer interrupt the process the usual way: they are
/// read from `fd` instead. Forked children reset what they inherit with [`reset_signals`].
pub struct SignalEvents(imp::SignalEvents);

impl SignalEvents {
    pub fn new(signals: &[i32]) -> io::Result<SignalEvents> {
        imp::SignalEvents::new(signals).map(SignalEvents)
    }
    pub fn fd(&self) -> RawFd {
        self.0.fd()
    }
    /// The signals that arrived since the last read (each at least once); never blocks.
    pub fn read(&self) -> Vec<i32> {
        self.0.read()
    }
}

/// An anonymous file of `size` zeroed bytes, close-on-exec, to share (mmap) with a child: no name
/// remains in any directory.
pub fn anonymous_file(size: usize) -> io::Result<OwnedFd> {
    imp::anonymous_file(size)
}

/// "End me when my parent dies", for a child started with `Command` (call in `pre_exec`: only
/// async-signal-safe work). Where the system has no such thing it does nothing: the child must also
/// watch a pipe from its parent (the zygote watches its stdin).
pub fn end_with_parent_pre_exec(signal: i32) {
    imp::end_with_parent(signal)
}

/// "End me when my parent dies", in a freshly forked child that cannot watch anything itself (a
/// run, busy in Lua). `watch` is the read end of a pipe whose write end only the parent holds
/// (made with [`ParentWatch`]). On Linux the process is signalled by the system; elsewhere a thread
/// of the child waits for the pipe to close and then kills the process with SIGKILL.
pub struct ParentWatch {
    read: OwnedFd,
    write: OwnedFd,
}

impl ParentWatch {
    /// Made by the parent, before it forks children.
    pub fn new() -> io::Result<ParentWatch> {
        let (read, write) = pipe()?;
        Ok(ParentWatch { read, write })
    }
    /// The fd a child must keep open across its clean-up of inherited fds.
    pub fn child_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.read)
    }
    /// In the forked child: arms the watch; the child exits at once if the parent is already gone.
    /// Call after [`close_fds_from`] (which keeps `child_fd`); the parent keeps its own copy.
    pub fn arm_in_child(&self) {
        use std::os::fd::AsRawFd;
        imp::arm_parent_watch(self.read.as_raw_fd(), self.write.as_raw_fd())
    }
}

/// Closes every fd from `first` up, except those in `keep` (a child after fork, so nothing of its
/// parent's stays open).
pub fn close_fds_from(first: RawFd, keep: &[RawFd]) {
    imp::close_fds_from(first, keep)
}

/// Empties the environment (a forked child before it takes its caller's).
pub fn clear_environment() {
    imp::clear_environment()
}

/// Random bytes from the system, for seeds.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    imp::random_bytes(buf)
}

/// This process's umask, read without changing it (other threads may be creating files).
pub fn current_umask() -> u32 {
    imp::current_umask()
}

/// The highest signal number, for a child that resets every disposition.
pub fn last_signal() -> i32 {
    imp::last_signal()
}

/// The signal a run handles exactly like SIGINT and that `system()` leaves alone (it ignores
/// SIGINT while its child runs), so an interrupt reaches a script looping on `os.execute`.
pub fn interrupt_signal() -> i32 {
    imp::interrupt_signal()
}

/// Accepts one connection on a non-blocking listener: close-on-exec and non-blocking; None when
/// none is waiting (or on error).
pub fn accept_nonblocking(listener: RawFd) -> Option<OwnedFd> {
    imp::accept_nonblocking(listener)
}

/// One `recvmsg` without waiting: the bytes into `buf`, and the fds passed along (SCM_RIGHTS),
/// close-on-exec.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    imp::recv_with_fds(fd, buf)
}

/// After a read on a TCP connection: acknowledge at once (no delayed ACK). Linux only; elsewhere
/// nothing (the system's delayed ACK then costs a peer that writes twice without TCP_NODELAY up to
/// its delay, 40-200 ms, per round trip).
pub fn quick_ack(tcp: &std::net::TcpStream) {
    imp::quick_ack(tcp)
}

/// Who a client process is, as our own clients name themselves in a request's metadata
/// (`llmspell.owner`), and a watch on its end. Linux: its pid and start time (a reused pid does not
/// match), watched with a process fd. Elsewhere: a lock the client holds as long as it lives (a
/// flock on a file of its own), which a kernel thread waits for: no pid is polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientProcess {
    pub pid: i32,
    mark: imp::ClientMark,
}

impl ClientProcess {
    /// How this process names itself (the JSON object of `llmspell.owner`).
    pub fn current() -> serde_json::Value {
        imp::ClientMark::current()
    }
    /// The client a request's `llmspell.owner` names; None if it names none (or not in our way).
    pub fn of(owner: &serde_json::Value) -> Option<ClientProcess> {
        let pid = i32::try_from(owner["pid"].as_u64()?).ok()?;
        Some(ClientProcess { pid, mark: imp::ClientMark::of(owner)? })
    }
    pub fn alive(&self) -> bool {
        self.mark.alive(self.pid)
    }
    /// An fd readable once the process has ended; Ok(None) if it has ended already.
    pub fn watch_end(&self) -> io::Result<Option<OwnedFd>> {
        self.mark.watch_end(self.pid)
    }
    #[cfg(test)]
    pub(crate) fn not_this_one(&self) -> ClientProcess {
        ClientProcess { pid: self.pid, mark: self.mark.other() }
    }
}

/// How a client that has ended named itself (for tests of what depends on clients).
#[cfg(test)]
pub(crate) fn ended_client() -> serde_json::Value {
    let (mut child, named) = tests::client_child();
    let _ = child.kill();
    let _ = child.wait();
    named
}

#[cfg(test)]
mod tests;
