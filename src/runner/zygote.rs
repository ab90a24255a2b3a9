//! The zygote: a single-threaded process started by the kernel (`llmspell kernel runner`, hidden) that
//! forks one runner per `llmspell run`.
//!
//! It waits in one `poll` on: the listening socket `kernels/<id>.run` (bound by the kernel before it
//! writes its connection file, so a client that sees the kernel also finds the socket), its
//! connections, signals as events (`sys::SignalEvents`: SIGCHLD: reap; SIGTERM/SIGHUP: the kernel is gone), and its stdin, a pipe
//! whose other end only the kernel holds (end of file: the kernel is gone). When the kernel is gone
//! (stopped, idle timeout, killed) it kills its runs and exits. No threads, no timers.
//!
//! Before serving it prepares one Lua state ([`super::child::Template`]); every run is a fork, so
//! each starts from its own untouched copy of it.
//!
//! Per connection: read the request and the caller's fds 0-2 as they arrive, then `fork`. The child becomes the run
//! ([`super::child`]); the zygote keeps the connection and the pid. A forwarded SIGINT goes to the
//! run's process group (as a terminal's Ctrl-C would) and, as [`super::lua_call::interrupt_signal`], to
//! the runner itself, which `system()` does not ignore; other forwarded signals go to the group. A
//! connection that hangs up before its run ended (client killed, terminal closed) gets its run's
//! group SIGKILLed at once. When the run ends, its status goes back and the connection is closed.

use super::child::Template;
use super::handle::{map_activity, now_millis, Activity};
use super::proto::{self, End, Request};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

struct Run {
    pid: libc::pid_t,
    /// None once the client hung up (its run was killed; waiting to be reaped).
    conn: Option<OwnedFd>,
}

/// `llmspell kernel runner --listen-fd N --activity-fd M`: the zygote's main loop.
pub fn zygote_main(args: Vec<OsString>) -> ExitCode {
    let mut a = pico_args::Arguments::from_vec(args);
    let listen: Option<RawFd> = a.opt_value_from_str("--listen-fd").ok().flatten();
    let activity: Option<RawFd> = a.opt_value_from_str("--activity-fd").ok().flatten();
    let Some(listen) = listen else {
        eprintln!("llmspell: kernel runner is started by the kernel itself");
        return ExitCode::from(2);
    };
    // Nothing of the kernel's stays open here (libzmq's own fds are not close-on-exec).
    let keep: Vec<RawFd> = [Some(listen), activity].into_iter().flatten().collect();
    crate::sys::close_fds_from(3, &keep);
    let activity = activity.and_then(map_activity);
    let state_path = crate::connection::home().join("state.json");
    let template = match super::child::Template::new(&state_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("llmspell runner: cannot prepare Lua: {e}");
            return ExitCode::from(1);
        }
    };
    match serve(listen, activity, template) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmspell runner: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGCHLD (reap), and SIGTERM, SIGHUP and SIGINT (the kernel is gone), read in the main loop.
fn zygote_signals() -> Result<crate::sys::SignalEvents, String> {
    let signals = [libc::SIGCHLD, libc::SIGTERM, libc::SIGHUP, libc::SIGINT];
    crate::sys::SignalEvents::new(&signals).map_err(|e| format!("cannot watch signals: {e}"))
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn serve(listen: RawFd, activity: Option<&Activity>, template: Template) -> Result<(), String> {
    let mut template = Some(template);
    // SAFETY: the kernel passed us this listening socket; we own it from now on.
    let listener = Some(unsafe { OwnedFd::from_raw_fd(listen) });
    // SAFETY: fcntl on our own fds.
    unsafe {
        libc::fcntl(listen, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(listen, libc::F_SETFL, libc::O_NONBLOCK);
    }
    let signals = zygote_signals()?;
    let sfd = signals.fd();
    // The kernel may have died before the system signalled us (or the system never does): our
    // stdin pipe tells anyway.
    let mut kernel_alive = true;
    let mut runs: Vec<Run> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let mut fds = vec![libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 }];
        let mut kernel_idx = None;
        let mut listen_idx = None;
        if kernel_alive {
            kernel_idx = Some(fds.len());
            fds.push(libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 });
            if let Some(l) = &listener {
                listen_idx = Some(fds.len());
                fds.push(libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
        }
        let first_conn = fds.len();
        for r in &runs {
            if let Some(c) = &r.conn {
                fds.push(libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
        }
        let first_pending = fds.len();
        for p in &pending {
            fds.push(libc::pollfd { fd: p.fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: poll on a local array.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        // Connections first (before reaping or accepting can close or reuse an fd number).
        let polled: Vec<(RawFd, i16)> =
            fds[first_conn..first_pending].iter().map(|p| (p.fd, p.revents)).collect();
        for (fd, revents) in polled {
            let run = runs.iter_mut().find(|r| r.conn.as_ref().map(|c| c.as_raw_fd()) == Some(fd));
            if let (true, Some(run)) = (revents != 0, run) {
                read_client(run, fd);
            }
        }
        let ready: Vec<RawFd> =
            fds[first_pending..].iter().filter(|p| p.revents != 0).map(|p| p.fd).collect();
        pending.retain_mut(|p| !ready.contains(&p.fd()) || advance(p, &mut runs, activity, &mut template));
        if fds[0].revents != 0 {
            if signals.read().iter().any(|&s| s != libc::SIGCHLD) {
                kernel_alive = false;
            }
            reap(&mut runs, activity);
        }
        if kernel_idx.is_some_and(|i| fds[i].revents != 0) && kernel_pipe_closed() {
            kernel_alive = false;
        }
        if !kernel_alive {
            // The kernel is gone (stopped, idle, killed): its runs end with it, and their clients,
            // seeing the connection close without a status, say so and fail.
            for r in &runs {
                // SAFETY: signalling each run's own process group.
                unsafe { libc::kill(-r.pid, libc::SIGKILL) };
            }
            return Ok(());
        }
        if let (Some(i), Some(l)) = (listen_idx, &listener) {
            if fds[i].revents != 0 {
                accept_all(l.as_raw_fd(), &mut pending, &mut runs, activity, &mut template);
            }
        }
    }
}

/// What a run's client sent: signals to forward (`S` + number), or its hang-up, which ends the run
/// at once, with everything it started.
fn read_client(run: &mut Run, fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a local buffer from a connection we own.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
    if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock) {
        // SAFETY: signalling the run's own process group.
        unsafe { libc::kill(-run.pid, libc::SIGKILL) };
        run.conn = None;
        return;
    }
    let n = n.max(0) as usize;
    for pair in buf[..n].chunks(2) {
        if pair.len() == 2 && pair[0] == b'S' {
            forward(run.pid, pair[1] as i32);
        }
    }
}

/// Reads the pipe from the kernel (our stdin): true once it has closed (the kernel is gone).
fn kernel_pipe_closed() -> bool {
    let mut b = [0u8; 64];
    // SAFETY: reading into a local buffer from our stdin.
    let n = unsafe { libc::read(0, b.as_mut_ptr() as *mut libc::c_void, b.len()) };
    n <= 0
}

fn reap(runs: &mut Vec<Run>, activity: Option<&Activity>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own children.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let Some(i) = runs.iter().position(|r| r.pid == pid) else { continue };
        let run = runs.swap_remove(i);
        let end = if libc::WIFSIGNALED(status) {
            End::Signaled(libc::WTERMSIG(status))
        } else {
            End::Exited(libc::WEXITSTATUS(status))
        };
        if let Some(conn) = run.conn {
            let msg = proto::encode_end(end);
            // SAFETY: a small send on our own socket; the client may be gone (no SIGPIPE).
            unsafe {
                libc::send(
                    conn.as_raw_fd(),
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
        }
        if let Some(a) = activity {
            a.active.fetch_sub(1, Ordering::Relaxed);
            a.last.store(now_millis(), Ordering::Relaxed);
        }
    }
}

/// A signal the client received, passed on to its run.
fn forward(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill(2) on the run's process group and the run itself.
    unsafe {
        match sig {
            libc::SIGINT => {
                // Like a terminal's Ctrl-C: the whole group (a child in os.execute stops too). The
                // runner ignores SIGINT while system() waits, so it also gets a signal that is not.
                libc::kill(-pid, libc::SIGINT);
                libc::kill(pid, super::lua_call::interrupt_signal());
            }
            libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT => {
                libc::kill(-pid, sig);
            }
            _ => {}
        }
    }
}

/// A connection whose request has not all arrived yet (read as it comes: a slow or stalled client
/// never holds up the others).
struct Pending {
    /// Taken when the run starts.
    conn: Option<OwnedFd>,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

enum Progress {
    More,
    Done(Request, [OwnedFd; 3]),
    Failed(String),
    Gone,
}

impl Pending {
    fn fd(&self) -> RawFd {
        self.conn.as_ref().map(|c| c.as_raw_fd()).unwrap_or(-1)
    }

    fn advance(&mut self) -> Progress {
        loop {
            let mut want = 8;
            if self.buf.len() >= 8 {
                if &self.buf[..4] != proto::MAGIC {
                    return Progress::Failed(
                        "not a runner request (is the client the same llmspell version?)".into(),
                    );
                }
                let len = u32::from_le_bytes(self.buf[4..8].try_into().unwrap()) as usize;
                if len > proto::MAX_REQUEST {
                    return Progress::Failed(format!("request too large ({len} bytes)"));
                }
                want = 8 + len;
                if self.buf.len() == want {
                    let Some(req) = Request::decode(&self.buf[8..]) else {
                        return Progress::Failed("malformed request".into());
                    };
                    let fds = std::mem::take(&mut self.fds);
                    return match <[OwnedFd; 3]>::try_from(fds) {
                        Ok(fds) => Progress::Done(req, fds),
                        Err(v) => Progress::Failed(format!("expected 3 fds, got {}", v.len())),
                    };
                }
            }
            let mut chunk = vec![0u8; (want - self.buf.len()).min(1 << 16)];
            match crate::sys::recv_with_fds(self.fd(), &mut chunk) {
                Ok((0, _)) => return Progress::Gone,
                Ok((n, mut fds)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.fds.append(&mut fds);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Progress::More,
                Err(e) => return Progress::Failed(format!("cannot read the request: {e}")),
            }
        }
    }
}

/// Moves a pending connection on; starts its run once its request is complete. False: it is done.
fn advance(
    p: &mut Pending,
    runs: &mut Vec<Run>,
    activity: Option<&Activity>,
    template: &mut Option<Template>,
) -> bool {
    match p.advance() {
        Progress::More => true,
        Progress::Gone => false,
        Progress::Failed(e) => {
            // Unread bytes would turn our close into a reset that loses the message: drop them.
            let mut sink = [0u8; 4096];
            for _ in 0..64 {
                // SAFETY: reading into a local buffer from our own non-blocking socket.
                if unsafe { libc::recv(p.fd(), sink.as_mut_ptr() as *mut libc::c_void, sink.len(), 0) } <= 0 {
                    break;
                }
            }
            let msg = proto::encode_error(&e);
            // SAFETY: a small send on our own socket.
            unsafe {
                libc::send(
                    p.fd(),
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            false
        }
        Progress::Done(req, fds) => {
            if let Some(conn) = p.conn.take() {
                start_run(conn, req, fds, runs, activity, template);
            }
            false
        }
    }
}

fn accept_all(
    listen: RawFd,
    pending: &mut Vec<Pending>,
    runs: &mut Vec<Run>,
    activity: Option<&Activity>,
    template: &mut Option<Template>,
) {
    loop {
        let Some(conn) = crate::sys::accept_nonblocking(listen) else { return };
        let mut p = Pending { conn: Some(conn), buf: Vec::new(), fds: Vec::new() };
        if advance(&mut p, runs, activity, template) {
            pending.push(p);
        }
    }
}

fn start_run(
    conn: OwnedFd,
    req: Request,
    passed: [OwnedFd; 3],
    runs: &mut Vec<Run>,
    activity: Option<&Activity>,
    template: &mut Option<Template>,
) {
    // SAFETY: fork in a single-threaded process; the child only runs our own code and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let msg = proto::encode_error(&last_error("cannot fork a runner"));
        // SAFETY: a small send on our own socket.
        unsafe {
            libc::send(conn.as_raw_fd(), msg.as_ptr() as *const libc::c_void, msg.len(), libc::MSG_NOSIGNAL)
        };
        return;
    }
    if pid == 0 {
        let fds = passed.map(|f| f.into_raw_fd());
        match template.take() {
            Some(t) => super::child::run(req, fds, t),
            // SAFETY: leaving a forked child at once.
            None => unsafe { libc::_exit(1) },
        }
    }
    // SAFETY: the child does the same; whichever comes first makes the group before any kill.
    unsafe { libc::setpgid(pid, pid) };
    drop(passed);
    if let Some(a) = activity {
        a.active.fetch_add(1, Ordering::Relaxed);
        a.last.store(now_millis(), Ordering::Relaxed);
    }
    runs.push(Run { pid, conn: Some(conn) });
}
