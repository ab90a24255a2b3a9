//! `llmspell run`: hands the script, the caller's fds 0-2, cwd, environment and umask to the kernel's
//! zygote, passes on SIGINT/SIGTERM/SIGHUP/SIGQUIT, and ends exactly as the script's process did:
//! the same exit code, or killed by the same signal.

use super::proto::{End, Request};
use crate::connection::{self, ConnectionInfo, KernelFiles};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// Where the run should go.
pub enum Target<'a> {
    /// A kernel by id; `start` starts it (or waits until it has started) under the spawn lock when
    /// none is alive (`client::find_or_spawn`: the runner does not reach up into the client).
    Kernel { id: &'a str, start: &'a dyn Fn() -> Result<(), String> },
    /// The kernel of this connection file (one of ours: its `.run` socket is beside it).
    ConnectionFile(&'a Path),
}

/// How the run ended, for the caller's own exit.
pub enum Outcome {
    Exited(u8),
    Signaled(i32),
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking.
    unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
}

fn socket_for(target: &Target) -> Result<(PathBuf, String), String> {
    match target {
        Target::Kernel { id, start } => {
            connection::valid_id(id)?;
            let dir = connection::kernels_dir()?;
            let files = KernelFiles::new(&dir, id);
            // The fast way in: a live kernel's socket is bound before its connection file is
            // written (the lock alone is taken earlier, while the kernel is still starting).
            if !(files.is_alive() && files.connection.exists()) {
                wait_for_kernel(&files, *start)?;
            }
            Ok((super::socket_path(&dir, id), id.to_string()))
        }
        Target::ConnectionFile(path) => {
            let shown = path.display();
            let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json"));
            let dir = path.parent().unwrap_or(Path::new("."));
            // One of our kernels' own files: the socket is beside it.
            if let Some(id) = stem {
                let beside = super::socket_path(dir, id);
                if beside.exists() {
                    return Ok((beside, id.to_string()));
                }
            }
            // A kernel launched by Jupyter (socket named after its key), or a copy of one of ours.
            let info = ConnectionInfo::read(path)?;
            let kernels = connection::kernels_dir()?;
            let by_key = super::key_socket_path(&kernels, &info.key);
            if by_key.exists() {
                return Ok((by_key, shown.to_string()));
            }
            for files in KernelFiles::all(&kernels) {
                let same =
                    ConnectionInfo::read(&files.connection).map(|i| i.key == info.key).unwrap_or(false);
                if same {
                    return Ok((super::socket_path(&kernels, &files.id), files.id.clone()));
                }
            }
            Err(format!("the kernel of {shown} has no runner for `llmspell run` (not an llmspell kernel?)"))
        }
    }
}

/// The usual way in (under the spawn lock: start the kernel, or wait until it has started). A slow
/// handshake (a loaded machine) does not matter when the kernel is up.
fn wait_for_kernel(files: &KernelFiles, start: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
    match start() {
        Err(e) if !(files.is_alive() && files.connection.exists()) => Err(e),
        _ => Ok(()),
    }
}

/// Runs `argv[first_arg..]` (lua's options, script and its arguments; argv is this process's whole
/// command line) and reports how it ended.
pub fn run(target: &Target, argv: Vec<OsString>, first_arg: usize) -> Result<Outcome, String> {
    let (socket, id) = socket_for(target)?;
    let mut stream = UnixStream::connect(&socket);
    if let (Err(_), Target::Kernel { id, start }) = (&stream, target) {
        // A kernel stopping or starting at this very moment: once more, through the spawn lock.
        wait_for_kernel(&KernelFiles::new(&connection::kernels_dir()?, id), *start)?;
        stream = UnixStream::connect(&socket);
    }
    let stream = stream.map_err(|e| {
        format!(
            "cannot reach the runner of kernel {id:?} ({}: {e}); if it was started by an older llmspell, \
             restart it: llmspell kernel stop {id}",
            socket.display()
        )
    })?;
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    // SAFETY: umask has no failure; read it by setting and restoring (no threads here).
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            kv
        })
        .collect();
    let req = Request {
        argv: lua_arg(&argv, first_arg),
        first_arg: 1,
        cwd: cwd.as_os_str().as_bytes().to_vec(),
        env,
        umask: umask as u32,
        program: argv.first().map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
    };

    // Signals become bytes on a pipe from here on, so none is lost while the request goes out.
    let (read, write) = crate::sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    crate::sys::set_nonblocking(read.as_raw_fd());
    crate::sys::set_nonblocking(write.as_raw_fd());
    // The handler writes to it for as long as the process lives.
    let pipe = [std::os::fd::IntoRawFd::into_raw_fd(read), std::os::fd::IntoRawFd::into_raw_fd(write)];
    SIGNAL_PIPE.store(pipe[1], Ordering::Relaxed);
    // SAFETY: sigaction with a handler that only writes to the pipe.
    unsafe {
        for sig in FORWARDED {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    send_request(&stream, &req.encode())?;
    wait(&stream, pipe[0], &id)
}

/// The run's `arg` from its most negative entry, as lua's: the interpreter, then lua's command
/// line (`argv[first_arg..]`) without `run` or llmspell's own options. The interpreter is this
/// binary by its absolute path, so a script that starts its interpreter again (`arg[-1]`, or all the
/// negative entries together) starts llmspell itself, whatever its directory or PATH.
pub fn lua_arg(argv: &[OsString], first_arg: usize) -> Vec<Vec<u8>> {
    let interpreter = std::env::current_exe()
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|_| argv.first().cloned().unwrap_or_else(|| "llmspell".into()));
    std::iter::once(&interpreter).chain(&argv[first_arg..]).map(|a| a.as_bytes().to_vec()).collect()
}

/// Sends the request; the caller's fds 0, 1, 2 go with its first bytes (a closed one as /dev/null).
fn send_request(stream: &UnixStream, bytes: &[u8]) -> Result<(), String> {
    let mut fds = [0i32, 1, 2];
    let mut opened = Vec::new();
    for (i, fd) in fds.iter_mut().enumerate() {
        // SAFETY: F_GETFD only inspects our fd table.
        if unsafe { libc::fcntl(i as i32, libc::F_GETFD) } < 0 {
            let f = std::fs::OpenOptions::new()
                .read(i == 0)
                .write(i != 0)
                .open("/dev/null")
                .map_err(|e| format!("cannot open /dev/null: {e}"))?;
            *fd = f.as_raw_fd();
            opened.push(f);
        }
    }
    send_with_fds(stream, bytes, fds)
}

/// Sends `bytes` on the runner socket with `fds` (the run's 0, 1, 2) attached to the first
/// `sendmsg`. The kernel's isolated remote runs use it too, with pipes.
pub(crate) fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: [RawFd; 3]) -> Result<(), String> {
    let fd = stream.as_raw_fd();
    let mut sent = 0usize;
    let mut first = true;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        let mut iov = libc::iovec { iov_base: rest.as_ptr() as *mut libc::c_void, iov_len: rest.len() };
        let mut cmsg = [0u64; 4];
        // SAFETY: msghdr and control buffer are local and outlive the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if first {
                // `as _`: the field types differ between Linux (size_t) and the BSDs (socklen_t).
                msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = libc::CMSG_SPACE(12) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(12) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(c), 12);
            }
            libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot send the run to the kernel: {e}"));
        }
        first = false;
        sent += n as usize;
    }
    Ok(())
}

fn wait(stream: &UnixStream, signals: RawFd, id: &str) -> Result<Outcome, String> {
    let mut reply = Vec::new();
    let mut stream_ref = stream;
    loop {
        let mut fds = [
            libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: signals, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on a local array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR: the signal is in the pipe
        }
        if fds[1].revents != 0 {
            let mut b = [0u8; 16];
            // SAFETY: reading our own non-blocking pipe into a local buffer.
            let n = unsafe { libc::read(signals, b.as_mut_ptr() as *mut libc::c_void, b.len()) };
            for &sig in &b[..n.max(0) as usize] {
                let msg = [b'S', sig];
                // SAFETY: a two-byte send on our socket; a gone zygote shows up as EOF below.
                unsafe {
                    libc::send(stream.as_raw_fd(), msg.as_ptr() as *const libc::c_void, 2, libc::MSG_NOSIGNAL)
                };
            }
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 4096];
            let n = match stream_ref.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            reply.extend_from_slice(&buf[..n]);
            if let Some(outcome) = parse_reply(&reply)? {
                return Ok(outcome);
            }
            if n == 0 {
                return Err(format!(
                    "kernel {id:?} stopped or died before the script ended (see llmspell kernel status {id})"
                ));
            }
        }
    }
}

/// The zygote's answer so far: None until it is complete.
pub(crate) fn parse_reply(r: &[u8]) -> Result<Option<Outcome>, String> {
    match r.first() {
        Some(b'X') if r.len() >= 6 => {
            let v = i32::from_le_bytes(r[2..6].try_into().unwrap());
            let end = if r[1] == 0 { End::Exited(v) } else { End::Signaled(v) };
            Ok(Some(match end {
                End::Exited(c) => Outcome::Exited((c & 0xff) as u8),
                End::Signaled(s) => Outcome::Signaled(s),
            }))
        }
        Some(b'E') if r.len() >= 5 => {
            let n = u32::from_le_bytes(r[1..5].try_into().unwrap()) as usize;
            if r.len() >= 5 + n {
                Err(format!("the kernel could not start the run: {}", String::from_utf8_lossy(&r[5..5 + n])))
            } else {
                Ok(None)
            }
        }
        Some(b'X' | b'E') | None => Ok(None),
        Some(_) => Err("unexpected reply from the runner".into()),
    }
}

/// Ends this process the way the script's ended: its exit code, or death by the same signal.
pub fn exit_like(outcome: Outcome) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match outcome {
        Outcome::Exited(c) => std::process::exit(c as i32),
        Outcome::Signaled(sig) => {
            // SAFETY: back to the default action, unblocked, then raised on ourselves.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(sig);
            }
            // A signal whose default is not to terminate (it should not happen): the shell's code.
            std::process::exit(128 + sig)
        }
    }
}
