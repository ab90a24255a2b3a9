//! The kernel process: sockets, one thread per channel, the request loop on the Lua thread, busy/idle,
//! shutdown.
//!
//! Threads (each ZeroMQ socket belongs to exactly one of them, except iopub's, shared under a lock):
//! - heartbeat: echoes on its ROUTER socket and nothing else, so a busy kernel still looks alive.
//! - iopub: greets each subscription with `iopub_welcome` and sends held or queued messages when
//!   their time is up. The XPUB socket itself is shared under a lock ([`IopubSocket`]): the thread
//!   that has something to publish sends it, so output never waits for a hand-off between threads.
//!   (design.md gives it one owner thread; that cost every message a thread wake-up.)
//! - control: answers kernel_info, interrupt and shutdown itself, so they work while Lua is busy.
//! - stdin: sends the Lua thread's `input_request`s to the asking client, returns `input_reply`s.
//! - lua: owns the shell socket and runs [`Core`]: reads one request at a time in arrival order,
//!   serves it with the interpreter in `lua.rs`, replies. Requests that arrive while a cell runs
//!   wait in ZeroMQ's queue; keeping shell on this thread saves two thread hand-offs per request.
//! - signals: SIGINT interrupts, SIGTERM/SIGHUP shut down.
//!
//! Every thread waits on sockets with `zmq::poll`, on file descriptors or on channels; none polls on
//! a timer.

use crate::connection::{self, ConnectionInfo, KernelFiles};
use crate::lua::{self, Completeness, Host, Input, InputError, Interpreter, Stream};
use crate::wire::{self, Message, ReplayGuard, Signer};
use crossbeam_channel::{select, Receiver, Sender};
use fs2::FileExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the kernel was asked to run (`llmspell kernel start ...`).
#[derive(Debug, Clone)]
pub struct Options {
    pub id: String,
    pub connection_file: Option<PathBuf>,
    pub ip: String,
    pub memory_limit_mb: Option<usize>,
    /// Shut down after this long without a request (None: never).
    pub idle_timeout: Option<Duration>,
    /// Largest message (all frames together) accepted from a client.
    pub max_message_bytes: usize,
    /// How long a cell waits for an `input_reply` before giving up.
    pub input_timeout: Duration,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
const STREAM_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
const STREAM_FLUSH_BYTES: usize = 64 << 10;
/// Messages queued per iopub subscriber before the kernel waits for it (and then drops for it).
const IOPUB_HWM: i32 = 1000;
/// How long a send waits for a subscriber whose queue is full before that subscriber is set aside.
/// Long enough for a reader that keeps reading (libzmq hands a reader's progress back in batches of
/// half its high-water mark: 0.5 s for a pyzmq client reading 1 000 messages/s), short enough that
/// a client that never reads iopub costs the others one short pause.
const IOPUB_STALL_MS: i32 = 1000;

/// What tells the main thread to stop.
enum Exit {
    Shutdown,
    Signal(i32),
}

/// Shared between threads: the interrupt flag, the time of the last request, whether a request runs.
struct Shared {
    interrupt: Arc<AtomicBool>,
    interrupt_wake: Sender<()>,
    last_request: AtomicU64,
    busy: AtomicBool,
    exit: Sender<Exit>,
}

impl Shared {
    fn touch(&self) {
        self.last_request.store(now_millis(), Ordering::Relaxed);
    }
    fn interrupt(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
        let _ = self.interrupt_wake.try_send(());
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs a kernel until it is shut down. Errors are one line for the user.
pub fn start(opts: Options) -> Result<(), String> {
    // Which files are ours: with --connection-file the launcher (Jupyter) owns it; otherwise we write
    // kernels/<id>.json and hold kernels/<id>.lock for our whole life.
    let (info_in, own_files, _lock) = match &opts.connection_file {
        Some(path) => (Some(ConnectionInfo::read(path)?), None, None),
        None => {
            connection::valid_id(&opts.id)?;
            let dir = connection::kernels_dir()?;
            let files = KernelFiles::new(&dir, &opts.id);
            let lock = connection::open_lock_file(&files.lock)
                .map_err(|e| format!("cannot open {}: {e}", files.lock.display()))?;
            if lock.try_lock_exclusive().is_err() {
                let pid = ConnectionInfo::read(&files.connection).ok().and_then(|i| i.pid);
                let pid = pid.map(|p| format!("pid {p}, ")).unwrap_or_default();
                return Err(format!(
                    "kernel {:?} is already running ({pid}connection file {})",
                    opts.id,
                    files.connection.display()
                ));
            }
            (None, Some(files), Some(lock))
        }
    };

    if opts.ip != "127.0.0.1" && opts.ip != "localhost" && opts.ip != "::1" {
        log::warn!(
            "binding {}: anyone who can reach this address and holds the key can run code as this user",
            opts.ip
        );
    }
    let key = match &info_in {
        Some(i) => i.key.clone(),
        None => wire::random_hex(32),
    };
    let signer = Signer::new(&key);
    let ctx = zmq::Context::new();
    let sockets = Sockets::bind(&ctx, info_in.as_ref(), &opts.ip)?;
    let mut info = sockets.info(info_in.as_ref(), &opts.ip, &key);
    info.pid = Some(std::process::id());
    if let Some(files) = &own_files {
        info.write(&files.connection)
            .map_err(|e| format!("cannot write {}: {e}", files.connection.display()))?;
    }
    log::info!("kernel {} listening on {} (shell {})", opts.id, info.ip, info.shell_port);

    let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
    let shared = Arc::new(Shared {
        interrupt: Arc::new(AtomicBool::new(false)),
        interrupt_wake: wake_tx,
        last_request: AtomicU64::new(now_millis()),
        busy: AtomicBool::new(false),
        exit: exit_tx,
    });
    let session = wire::random_hex(16);
    let (input_tx, input_rx) = crossbeam_channel::unbounded::<InputEvent>();

    // The inproc PULL ends are bound before any thread connects to them.
    let Sockets { shell, control, stdin, iopub, hb } = sockets;
    let stdin_pull = bound_pull(&ctx, "inproc://stdin-requests")?;
    let iopub_fd = iopub.get_fd().map_err(|e| format!("cannot watch the iopub socket: {e}"))?;
    let publisher = Publisher::new(IopubSocket::new(iopub, signer.clone(), session.clone())?);
    let child_output = ChildOutput::start(publisher.clone())?;
    let iopub_counts = publisher.never_waiting();

    let max = opts.max_message_bytes;
    spawn("heartbeat", move || heartbeat(hb));
    {
        let iopub = publisher.iopub.clone();
        spawn("iopub", move || iopub_loop(iopub, iopub_fd));
    }
    {
        let signer = signer.clone();
        let shared = shared.clone();
        // Control answers even while a publisher waits for a stalled subscriber.
        let publisher = publisher.never_waiting();
        spawn("control", move || control_loop(control, publisher, &signer, &shared, max));
    }
    {
        let signer = signer.clone();
        let ctx = ctx.clone();
        spawn("stdin", move || stdin_loop(&ctx, stdin, stdin_pull, input_tx, &signer, max));
    }
    let child_output_handle = child_output.clone();
    {
        let shared = shared.clone();
        let ctx = ctx.clone();
        let opts = opts.clone();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        spawn("lua", move || {
            let core = Core::new(&ctx, shell, publisher, &shared, &opts, input_rx, wake_rx, child_output);
            match core {
                Ok(core) => {
                    let _ = ready_tx.send(Ok(()));
                    core.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx.recv().map_err(|_| "the Lua thread died while starting".to_string())??;
    }
    watch_signals(shared.clone())?;
    // A file-size limit must fail the write (EFBIG, reported by state), not kill the kernel.
    // SAFETY: setting a signal disposition to SIG_IGN has no handler code to be unsafe.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    let reason = wait_for_exit(&exit_rx, &shared, opts.idle_timeout);
    match reason {
        Exit::Shutdown => log::info!("shutting down on request"),
        Exit::Signal(s) => log::info!("shutting down on signal {s}"),
    }
    log::info!("iopub since start: {}", iopub_counts.counts());
    // Stop everything: interrupt running Lua, then terminate the context, which wakes every blocked
    // socket with ETERM and waits (bounded by LINGER) for queued replies to leave. A thread stuck in
    // native code must not keep the process alive, so the wait is bounded.
    shared.interrupt();
    child_output_handle.stop();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let mut ctx = ctx;
        let _ = ctx.destroy();
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    if let Some(files) = &own_files {
        files.remove_stale();
    }
    log::logger().flush();
    Ok(())
}

/// Output that child processes of user code write (os.execute, io.popen's stderr) to fds 1 and 2:
/// a thread forwards it as stream output of the running execute request, so `os.execute("ls")`
/// shows its listing like `lua` would; between requests it is discarded. The kernel's own stdout
/// and stderr (a terminal, Jupyter's server log) never see user output.
pub struct ChildOutput {
    /// The execute request whose output this is, while one runs.
    parent: std::sync::Mutex<Option<Arc<Message>>>,
    flush_requests: Sender<Sender<()>>,
    wake_fd: i32,
    /// Set at shutdown: the thread ends and closes its socket, so the context can terminate.
    stopping: AtomicBool,
}

impl ChildOutput {
    /// Redirects fds 1 and 2 into pipes and starts the forwarding thread.
    fn start(publisher: Publisher) -> Result<Arc<ChildOutput>, String> {
        let pipe = || -> Result<[i32; 2], String> {
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 fills a local array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(format!("cannot create a pipe: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fcntl on the fd we just created.
            unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) };
            Ok(fds)
        };
        let (out, err, wake) = (pipe()?, pipe()?, pipe()?);
        // SAFETY: dup2 of our own pipe ends onto 1 and 2; dup2 clears CLOEXEC on the new fds, so
        // children inherit them. The originals are closed: fds 1 and 2 keep the pipes open.
        unsafe {
            libc::dup2(out[1], 1);
            libc::dup2(err[1], 2);
            libc::close(out[1]);
            libc::close(err[1]);
        }
        let (flush_tx, flush_rx) = crossbeam_channel::unbounded::<Sender<()>>();
        let shared = Arc::new(ChildOutput {
            parent: std::sync::Mutex::new(None),
            flush_requests: flush_tx,
            wake_fd: wake[1],
            stopping: AtomicBool::new(false),
        });
        let me = shared.clone();
        spawn("child-output", move || me.forward([out[0], err[0]], wake[0], flush_rx, publisher));
        Ok(shared)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: a one-byte write to our own pipe.
        unsafe { libc::write(self.wake_fd, b"!".as_ptr() as *const libc::c_void, 1) };
    }

    fn set_parent(&self, parent: Option<Arc<Message>>) {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = parent;
    }

    /// Returns once everything written to the pipes so far has been published.
    fn sync(&self) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.flush_requests.send(ack_tx).is_ok() {
            // SAFETY: a one-byte write to our own pipe.
            unsafe { libc::write(self.wake_fd, b"!".as_ptr() as *const libc::c_void, 1) };
            let _ = ack_rx.recv_timeout(Duration::from_secs(1));
        }
    }

    fn forward(
        &self,
        pipes: [i32; 2],
        wake: i32,
        flush_requests: Receiver<Sender<()>>,
        publisher: Publisher,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let mut fds = [
                libc::pollfd { fd: pipes[0], events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pipes[1], events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: poll on a local array of valid fds.
            if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
                continue; // EINTR
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let flushing = fds[2].revents != 0;
            if flushing {
                // SAFETY: draining our own non-blocking wake pipe into a local buffer.
                while unsafe { libc::read(wake, buf.as_mut_ptr() as *mut libc::c_void, 64) } > 0 {}
            }
            for (i, name) in ["stdout", "stderr"].iter().enumerate() {
                // A flush drains what is there (bounded, in case a background child never stops).
                let mut budget = if flushing { 16 } else { 1 };
                while budget > 0 {
                    budget -= 1;
                    // SAFETY: reading into a local buffer from our own non-blocking pipe.
                    let n = unsafe { libc::read(pipes[i], buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                    if n <= 0 {
                        break;
                    }
                    let parent = self.parent.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(parent) = parent {
                        let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
                        publisher.publish(&parent, "stream", json!({ "name": name, "text": text }));
                    }
                }
            }
            if flushing {
                while let Ok(ack) = flush_requests.try_recv() {
                    let _ = ack.send(());
                }
            }
        }
    }
}

fn wait_for_exit(exit_rx: &Receiver<Exit>, shared: &Shared, idle: Option<Duration>) -> Exit {
    loop {
        let Some(idle) = idle else {
            return exit_rx.recv().unwrap_or(Exit::Shutdown);
        };
        let since =
            Duration::from_millis(now_millis().saturating_sub(shared.last_request.load(Ordering::Relaxed)));
        if since >= idle && !shared.busy.load(Ordering::Relaxed) {
            log::info!("no request for {}s: idle timeout", since.as_secs());
            return Exit::Shutdown;
        }
        let wait = if since >= idle { idle } else { idle - since };
        match exit_rx.recv_timeout(wait) {
            Ok(reason) => return reason,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(_) => return Exit::Shutdown,
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("spawning a kernel thread");
}

fn watch_signals(shared: Arc<Shared>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    spawn("signals", move || {
        for sig in signals.forever() {
            if sig == SIGINT {
                log::info!("SIGINT: interrupting");
                shared.interrupt();
            } else {
                let _ = shared.exit.send(Exit::Signal(sig));
            }
        }
    });
    Ok(())
}

struct Sockets {
    shell: zmq::Socket,
    control: zmq::Socket,
    stdin: zmq::Socket,
    iopub: zmq::Socket,
    hb: zmq::Socket,
}

impl Sockets {
    /// Binds the five channels: on the connection file's ports, or on free ports the OS picks.
    fn bind(ctx: &zmq::Context, info: Option<&ConnectionInfo>, ip: &str) -> Result<Sockets, String> {
        let make = |kind, port: Option<u16>| -> Result<zmq::Socket, String> {
            let s = ctx.socket(kind).map_err(|e| format!("cannot create a socket: {e}"))?;
            s.set_linger(1000).map_err(|e| e.to_string())?;
            let endpoint = match (info, port) {
                (Some(i), Some(p)) => i.endpoint(p),
                _ => format!("tcp://{}:*", bracket(ip)),
            };
            s.bind(&endpoint).map_err(|e| format!("cannot bind {endpoint}: {e}"))?;
            Ok(s)
        };
        let mut sockets = Sockets {
            shell: make(zmq::ROUTER, info.map(|i| i.shell_port))?,
            control: make(zmq::ROUTER, info.map(|i| i.control_port))?,
            stdin: make(zmq::ROUTER, info.map(|i| i.stdin_port))?,
            iopub: make(zmq::XPUB, info.map(|i| i.iopub_port))?,
            hb: make(zmq::ROUTER, info.map(|i| i.hb_port))?,
        };
        // Tell us when a client that an input_request is addressed to has gone.
        sockets.stdin.set_router_mandatory(true).map_err(|e| e.to_string())?;
        // Every subscription, even a repeated topic, must reach us so each subscriber gets a welcome.
        sockets.iopub.set_xpub_verbose(true).map_err(|e| e.to_string())?;
        sockets.iopub.set_sndhwm(IOPUB_HWM).map_err(|e| e.to_string())?;
        // Without XPUB_NODROP a PUB socket silently drops messages for a subscriber that is behind;
        // with it the send waits (bounded by SNDTIMEO) so a flood of output arrives complete.
        sockets.iopub.set_sndtimeo(IOPUB_STALL_MS).map_err(|e| e.to_string())?;
        set_int_option(&mut sockets.iopub, zmq_sys::ZMQ_XPUB_NODROP, 1)?;
        Ok(sockets)
    }

    fn info(&self, base: Option<&ConnectionInfo>, ip: &str, key: &str) -> ConnectionInfo {
        if let Some(b) = base {
            return b.clone();
        }
        let port = |s: &zmq::Socket| -> u16 {
            let ep = s.get_last_endpoint().ok().and_then(|e| e.ok()).unwrap_or_default();
            ep.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
        };
        ConnectionInfo {
            ip: ip.to_string(),
            transport: "tcp".into(),
            shell_port: port(&self.shell),
            iopub_port: port(&self.iopub),
            stdin_port: port(&self.stdin),
            control_port: port(&self.control),
            hb_port: port(&self.hb),
            key: key.to_string(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: "llmspell".into(),
            pid: None,
        }
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// Sets an int socket option the `zmq` crate does not wrap (XPUB_NODROP).
fn set_int_option(socket: &mut zmq::Socket, option: u32, value: i32) -> Result<(), String> {
    let value: std::os::raw::c_int = value;
    // SAFETY: the pointer is the live socket's own; these options take an int.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option as std::os::raw::c_int,
            &value as *const _ as *const std::os::raw::c_void,
            std::mem::size_of_val(&value),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: zmq_errno reads the calling thread's errno.
    let errno = unsafe { zmq_sys::zmq_errno() };
    Err(format!("cannot set option {option} on the iopub socket: {}", zmq::Error::from_raw(errno)))
}

fn bound_pull(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, String> {
    let s = ctx.socket(zmq::PULL).map_err(|e| e.to_string())?;
    s.bind(endpoint).map_err(|e| format!("cannot bind {endpoint}: {e}"))?;
    Ok(s)
}

fn connected_push(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, String> {
    let s = ctx.socket(zmq::PUSH).map_err(|e| e.to_string())?;
    s.set_linger(1000).map_err(|e| e.to_string())?;
    s.connect(endpoint).map_err(|e| format!("cannot connect {endpoint}: {e}"))?;
    Ok(s)
}

/// Echoes every message back to its sender. A ROUTER rather than the classic REP: REP keeps one
/// request/reply state for all peers, so one broken peer could cost another its echo.
fn heartbeat(hb: zmq::Socket) {
    loop {
        match hb.recv_multipart(0) {
            Ok(frames) => {
                if let Err(zmq::Error::ETERM) = hb.send_multipart(frames, 0) {
                    return;
                }
            }
            Err(zmq::Error::ETERM) => return,
            Err(_) => continue,
        }
    }
}

/// The iopub thread: greets each new subscriber, and sends what is held or queued when the timer
/// fires. It waits on the socket's ZMQ_FD (readable when the socket may have news) rather than on the
/// socket itself, which other threads use under the lock, and on the timer.
fn iopub_loop(iopub: Arc<IopubSocket>, fd: std::os::unix::io::RawFd) {
    loop {
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: iopub.timer, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on a local array. The timerfd lives as long as `iopub`. ZMQ_FD closes with the
        // socket, which any publishing thread may drop on ETERM; it then fires the timer, so this
        // thread wakes, finds the socket gone and returns (a poll on a closed fd just reports it).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            let mut expirations = 0u64;
            // SAFETY: reading the 8-byte expiration count of our own non-blocking timerfd.
            unsafe { libc::read(iopub.timer, &mut expirations as *mut u64 as *mut libc::c_void, 8) };
            iopub.release();
        }
        if !iopub.greet_subscribers() {
            return;
        }
    }
}

/// One encoded message: its frames.
type Frames = Vec<Vec<u8>>;

/// How long `busy` and `execute_input` may be held back before they go out on their own.
const IOPUB_HOLD: Duration = Duration::from_millis(2);
/// Messages from threads that must not wait for the socket (control), waiting for the next sender.
const IOPUB_QUEUE: usize = 1000;

/// The XPUB socket, shared by every thread that publishes: each sends under the lock, so a message
/// goes from its thread straight to ZeroMQ (no hand-off to another thread on the request path).
/// Sockets are not thread-safe, but one used by one thread at a time, with the lock's memory barrier
/// between, is what ZeroMQ allows.
///
/// A request's opening messages (busy, execute_input) are held until the next message, the reply,
/// or IOPUB_HOLD, whichever comes first: a quick request's iopub messages and its reply then leave
/// together, and ZeroMQ's I/O thread is woken once instead of once per message — on a small machine
/// those wake-ups are most of a round trip.
///
/// The control thread must answer while a publisher is stuck on a subscriber that stopped reading:
/// it never waits for the lock, but queues (see `send_nowait`).
///
/// Sends wait for slow subscribers (XPUB_NODROP), so a flood of output arrives complete. A subscriber
/// that reads nothing for IOPUB_STALL_MS (a suspended `jupyter console`, say) must not make every
/// later send wait that long, for everyone: the message that waited is sent once more without
/// waiting, which skips the full subscriber and sets it aside (libzmq deactivates a pipe it could not
/// write to) until it has read its backlog. The others lose nothing.
struct IopubSocket {
    state: std::sync::Mutex<IopubState>,
    counts: IopubCounts,
    queue: (Sender<Frames>, Receiver<Frames>),
    /// A timerfd: armed while messages are held or queued; the iopub thread sends them when it fires.
    timer: std::os::unix::io::RawFd,
    signer: Signer,
    session: String,
}

/// What iopub did since the kernel started (kernel_info's `llmspell.iopub`, and the log at shutdown).
#[derive(Default)]
struct IopubCounts {
    /// Messages handed to ZeroMQ.
    sent: AtomicU64,
    /// Messages no subscriber got: a queue for control's messages that overflowed, a failed send.
    dropped: AtomicU64,
    /// Sends that had to wait for a subscriber whose queue was full (a slow reader).
    waited: AtomicU64,
    /// Times a subscriber that left a full queue unread for IOPUB_STALL_MS was set aside: it misses
    /// the message that waited, and what follows until it has read its backlog.
    set_aside: AtomicU64,
}

impl IopubCounts {
    fn add(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn to_json(&self) -> Value {
        json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "waited": self.waited.load(Ordering::Relaxed),
            "set_aside": self.set_aside.load(Ordering::Relaxed),
        })
    }
}

struct IopubState {
    /// None once the context has terminated.
    socket: Option<zmq::Socket>,
    held: Vec<Vec<Vec<u8>>>,
}

impl IopubSocket {
    fn new(socket: zmq::Socket, signer: Signer, session: String) -> Result<IopubSocket, String> {
        // SAFETY: creating a timerfd; the result is checked.
        let timer =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        if timer < 0 {
            return Err(format!("cannot create a timer: {}", std::io::Error::last_os_error()));
        }
        let state = IopubState { socket: Some(socket), held: Vec::new() };
        Ok(IopubSocket {
            state: std::sync::Mutex::new(state),
            counts: IopubCounts::default(),
            queue: crossbeam_channel::bounded(IOPUB_QUEUE),
            timer,
            signer,
            session,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IopubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_timer(&self, after: Option<Duration>) {
        let after = after.unwrap_or_default();
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: after.as_secs() as _, tv_nsec: after.subsec_nanos() as _ },
        };
        // SAFETY: our own timerfd and a local itimerspec (all zero disarms it).
        unsafe { libc::timerfd_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
    }

    /// Wakes the iopub thread now (to send what is queued, or to notice the socket has gone).
    fn wake(&self) {
        self.set_timer(Some(Duration::from_nanos(1)));
    }

    /// Sends a message, after any held or queued ones.
    fn send(&self, frames: Vec<Vec<u8>>) {
        let mut state = self.lock();
        self.flush(&mut state, Some(frames));
    }

    /// Sends a message without ever waiting for a subscriber: it is queued, and sent now if the
    /// socket is free, else by whoever holds it next (or the iopub thread, woken for it).
    fn send_nowait(&self, frames: Vec<Vec<u8>>) {
        if self.queue.0.try_send(frames).is_err() {
            let n = IopubCounts::add(&self.counts.dropped);
            log::warn!(
                "iopub: {IOPUB_QUEUE} messages wait for a stalled subscriber; message dropped ({n} dropped so far)"
            );
        }
        match self.state.try_lock() {
            Ok(mut state) => self.flush(&mut state, None),
            Err(std::sync::TryLockError::Poisoned(e)) => self.flush(&mut e.into_inner(), None),
            Err(std::sync::TryLockError::WouldBlock) => self.wake(),
        }
    }

    /// Holds a message back (see the type's comment).
    fn hold(&self, frames: Vec<Vec<u8>>) {
        let mut state = self.lock();
        if state.held.is_empty() {
            self.set_timer(Some(IOPUB_HOLD));
        }
        state.held.push(frames);
    }

    /// Sends the held and queued messages now.
    fn release(&self) {
        let mut state = self.lock();
        if !state.held.is_empty() || !self.queue.1.is_empty() {
            self.flush(&mut state, None);
        }
    }

    fn flush(&self, state: &mut IopubState, next: Option<Vec<Vec<u8>>>) {
        let held = std::mem::take(&mut state.held);
        if !held.is_empty() {
            // Disarmed before the queue is drained: a wake-up for a message queued after the drain
            // is not cancelled.
            self.set_timer(None);
        }
        let queued: Vec<_> = self.queue.1.try_iter().collect();
        if state.socket.is_none() {
            return;
        }
        for frames in held.into_iter().chain(queued).chain(next) {
            if !self.send_one(state, frames) {
                state.socket = None;
                self.wake(); // the iopub thread must notice, and end
                return;
            }
        }
        // A send may have taken in a subscription (and consumed the ZMQ_FD wake-up the iopub
        // thread waits for): greet it here.
        if !self.welcome(state) {
            state.socket = None;
            self.wake();
        }
    }

    /// Sends one message; false on ETERM. A send that waited IOPUB_STALL_MS for a subscriber goes
    /// again without waiting (see the type's comment).
    fn send_one(&self, state: &mut IopubState, frames: Vec<Vec<u8>>) -> bool {
        let Some(socket) = state.socket.as_mut() else { return false };
        let mut sent = socket.send_multipart(&frames, zmq::DONTWAIT);
        if let Err(zmq::Error::EAGAIN) = sent {
            IopubCounts::add(&self.counts.waited);
            sent = socket.send_multipart(&frames, 0);
        }
        if let Err(zmq::Error::EAGAIN) = sent {
            let n = IopubCounts::add(&self.counts.set_aside);
            log::warn!(
                "iopub: a subscriber has left its full queue unread for {IOPUB_STALL_MS} ms: set aside until it \
                 reads again, it misses output meanwhile (the others get everything; {n} set aside so far)"
            );
            let _ = set_int_option(socket, zmq_sys::ZMQ_XPUB_NODROP, 0);
            sent = socket.send_multipart(&frames, 0);
            let _ = set_int_option(socket, zmq_sys::ZMQ_XPUB_NODROP, 1);
        }
        match sent {
            Ok(()) => {
                IopubCounts::add(&self.counts.sent);
                true
            }
            Err(zmq::Error::ETERM) => false,
            Err(e) => {
                let n = IopubCounts::add(&self.counts.dropped);
                log::warn!("iopub: a message could not be sent ({e}); dropped ({n} dropped so far)");
                true
            }
        }
    }

    /// Greets pending subscriptions; false once the context has terminated (the socket is closed).
    fn greet_subscribers(&self) -> bool {
        let mut state = self.lock();
        if state.socket.is_none() {
            return false;
        }
        if self.welcome(&mut state) {
            return true;
        }
        state.socket = None;
        false
    }

    /// Answers every subscription waiting on the socket with `iopub_welcome`; false on ETERM.
    fn welcome(&self, state: &mut IopubState) -> bool {
        loop {
            let Some(socket) = state.socket.as_mut() else { return false };
            match socket.get_events() {
                Ok(events) if events.contains(zmq::POLLIN) => {}
                Ok(_) => return true,
                Err(zmq::Error::ETERM) => return false,
                Err(_) => return true,
            }
            match socket.recv_bytes(zmq::DONTWAIT) {
                // A subscription is [1, topic...]; unsubscriptions ([0, ...]) need nothing.
                Ok(sub) if sub.first() == Some(&1) => {
                    let topic = String::from_utf8_lossy(&sub[1..]).into_owned();
                    let mut msg = Message {
                        header: wire::header("iopub_welcome", &self.session),
                        parent_header: json!({}),
                        metadata: json!({}),
                        content: json!({ "subscription": topic }),
                        ..Message::default()
                    };
                    msg.identities = vec![sub[1..].to_vec()];
                    if !self.send_one(state, wire::encode(&msg, &self.signer)) {
                        return false;
                    }
                }
                Ok(_) => {}
                Err(zmq::Error::ETERM) => return false,
                Err(_) => return true,
            }
        }
    }
}

impl Drop for IopubSocket {
    fn drop(&mut self) {
        // SAFETY: closing our own timerfd once, when the last user is gone.
        unsafe { libc::close(self.timer) };
    }
}

/// Publishes on iopub: signs, and prefixes the msg_type as the topic.
#[derive(Clone)]
struct Publisher {
    iopub: Arc<IopubSocket>,
    /// Never wait for the socket (the control thread's publisher): see IopubSocket::send_nowait.
    never_wait: bool,
}

impl Publisher {
    fn new(iopub: IopubSocket) -> Publisher {
        Publisher { iopub: Arc::new(iopub), never_wait: false }
    }

    /// A publisher for a thread that must never wait for a subscriber.
    fn never_waiting(&self) -> Publisher {
        Publisher { iopub: self.iopub.clone(), never_wait: true }
    }

    fn signer(&self) -> &Signer {
        &self.iopub.signer
    }

    fn session(&self) -> &str {
        &self.iopub.session
    }

    fn encode(&self, parent: &Message, msg_type: &str, content: Value) -> Vec<Vec<u8>> {
        let topic = vec![msg_type.as_bytes().to_vec()];
        wire::encode_child(parent, msg_type, self.session(), &content, topic, self.signer())
    }

    fn publish(&self, parent: &Message, msg_type: &str, content: Value) {
        let frames = self.encode(parent, msg_type, content);
        if self.never_wait {
            self.iopub.send_nowait(frames);
        } else {
            self.iopub.send(frames);
        }
    }

    /// Publishes, but lets the message wait for the next one (at most IOPUB_HOLD).
    fn publish_held(&self, parent: &Message, msg_type: &str, content: Value) {
        self.iopub.hold(self.encode(parent, msg_type, content));
    }

    /// Sends what is held now: before a reply, or before the kernel may block.
    fn release(&self) {
        self.iopub.release();
    }

    fn status(&self, parent: &Message, state: &str) {
        self.publish(parent, "status", json!({ "execution_state": state }));
    }

    /// The iopub counters, for kernel_info and the log.
    fn counts(&self) -> Value {
        self.iopub.counts.to_json()
    }
}

fn send_frames(socket: &zmq::Socket, frames: Vec<Vec<u8>>, channel: &str) -> bool {
    match socket.send_multipart(frames, 0) {
        Ok(()) => true,
        Err(zmq::Error::ETERM) => false,
        Err(e) => {
            log::warn!("{channel}: a message could not be sent ({e}); dropped");
            false
        }
    }
}

/// Receives one multipart message from a client socket, or None when the context is gone.
/// Oversized, malformed, badly signed and replayed messages are dropped and logged here.
fn recv_request(
    socket: &zmq::Socket,
    signer: &Signer,
    guard: &mut ReplayGuard,
    max: usize,
    channel: &str,
) -> Option<Option<Message>> {
    let mut frames = Vec::new();
    let mut size = 0usize;
    let mut too_big = false;
    loop {
        match socket.recv_bytes(0) {
            Ok(f) => {
                size += f.len();
                if size > max {
                    too_big = true;
                } else {
                    frames.push(f);
                }
            }
            Err(zmq::Error::ETERM) => return None,
            Err(e) => {
                log::warn!("{channel}: receive failed: {e}");
                return Some(None);
            }
        }
        if !socket.get_rcvmore().unwrap_or(false) {
            break;
        }
    }
    if too_big {
        log::warn!("{channel}: dropped a message of more than {max} bytes");
        return Some(None);
    }
    let sig = frames
        .iter()
        .position(|f| f == wire::DELIMITER)
        .and_then(|i| frames.get(i + 1).cloned())
        .unwrap_or_default();
    match wire::decode(frames, signer) {
        Ok(msg) => {
            if !guard.check(&sig) {
                log::warn!("{channel}: dropped a replayed message ({})", msg.msg_type());
                return Some(None);
            }
            Some(Some(msg))
        }
        Err(e) => {
            log::warn!("{channel}: dropped a message: {e}");
            Some(None)
        }
    }
}

/// A reply on a ROUTER socket (or the push that leads to one), addressed to the asker.
fn reply(socket: &zmq::Socket, signer: &Signer, session: &str, req: &Message, content: Value) {
    let msg_type = reply_type(req.msg_type());
    let frames = wire::encode_child(req, &msg_type, session, &content, req.identities.clone(), signer);
    send_frames(socket, frames, "reply");
}

fn reply_type(request: &str) -> String {
    match request.strip_suffix("_request") {
        Some(base) => format!("{base}_reply"),
        None => format!("{request}_reply"),
    }
}

fn unsupported(req: &Message) -> Value {
    json!({
        "status": "error",
        "ename": "UnsupportedRequest",
        "evalue": format!("llmspell does not handle {:?} messages", req.msg_type()),
        "traceback": [],
    })
}

pub fn kernel_info_content(iopub: Value) -> Value {
    json!({
        "status": "ok",
        "protocol_version": wire::PROTOCOL_VERSION,
        "implementation": "llmspell",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "lua",
            "version": lua::version(),
            "mimetype": "text/x-lua",
            "file_extension": ".lua",
            "pygments_lexer": "lua",
            "codemirror_mode": "lua",
        },
        "banner": format!("llmspell {} — Lua {} kernel. help() for the kernel globals.",
            env!("CARGO_PKG_VERSION"), lua::version()),
        "help_links": [
            { "text": "Lua 5.4 Reference Manual", "url": "https://www.lua.org/manual/5.4/" },
            { "text": "Programming in Lua", "url": "https://www.lua.org/pil/" },
        ],
        "debugger": false,
        "llmspell": { "iopub": iopub },
    })
}

fn control_loop(control: zmq::Socket, publisher: Publisher, signer: &Signer, shared: &Shared, max: usize) {
    let mut guard = ReplayGuard::new(1000);
    loop {
        let msg = match recv_request(&control, signer, &mut guard, max, "control") {
            None => return,
            Some(None) => continue,
            Some(Some(m)) => m,
        };
        shared.touch();
        publisher.status(&msg, "busy");
        let session = publisher.session();
        match msg.msg_type() {
            "kernel_info_request" => {
                reply(&control, signer, session, &msg, kernel_info_content(publisher.counts()))
            }
            "interrupt_request" => {
                shared.interrupt();
                reply(&control, signer, session, &msg, json!({"status": "ok"}));
            }
            "shutdown_request" => {
                let restart = msg.content["restart"].as_bool().unwrap_or(false);
                reply(&control, signer, session, &msg, json!({"status": "ok", "restart": restart}));
                publisher.status(&msg, "idle");
                let _ = shared.exit.send(Exit::Shutdown);
                continue;
            }
            t if t.ends_with("_request") => reply(&control, signer, session, &msg, unsupported(&msg)),
            other => log::warn!("control: ignored a {other:?} message"),
        }
        publisher.status(&msg, "idle");
    }
}

/// What the stdin thread tells the Lua thread.
enum InputEvent {
    Reply(Message),
    /// The client an input_request was addressed to is not connected.
    Unreachable,
}

/// Forwards the Lua thread's input requests to the asking client and its replies back.
///
/// A client that dies while its cell waits for input must not leave the kernel waiting: ZeroMQ does
/// not say which peer left, so on every disconnect seen on this socket the outstanding request is
/// sent again with ROUTER_MANDATORY. A gone client makes that fail (and the cell ends at once); a
/// live one gets the same request again, which clients ignore by its msg_id.
fn stdin_loop(
    ctx: &zmq::Context,
    stdin: zmq::Socket,
    requests: zmq::Socket,
    events: Sender<InputEvent>,
    signer: &Signer,
    max: usize,
) {
    let monitor = match stdin_monitor(ctx, &stdin) {
        Ok(m) => m,
        Err(e) => {
            log::warn!(
                "stdin: no disconnect monitor ({e}); a vanished client is noticed only by --input-timeout"
            );
            None
        }
    };
    let mut guard = ReplayGuard::new(1000);
    let mut outstanding: Option<(String, Vec<Vec<u8>>)> = None;
    // After a disconnect, ZeroMQ tears the peer's pipe down asynchronously: probe a moment later.
    let mut probe_at: Option<Instant> = None;
    loop {
        let mut items = vec![stdin.as_poll_item(zmq::POLLIN), requests.as_poll_item(zmq::POLLIN)];
        if let Some(m) = &monitor {
            items.push(m.as_poll_item(zmq::POLLIN));
        }
        let timeout =
            probe_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as i64).unwrap_or(-1);
        if let Err(zmq::Error::ETERM) = zmq::poll(&mut items, timeout) {
            return;
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        if ready[1] {
            match requests.recv_multipart(0) {
                // One empty frame: the Lua thread stopped waiting.
                Ok(frames) if frames.len() == 1 => outstanding = None,
                Ok(frames) => {
                    let id = wire::decode(frames.clone(), signer)
                        .map(|m| m.msg_id().to_string())
                        .unwrap_or_default();
                    if stdin.send_multipart(frames.clone(), 0).is_err() {
                        let _ = events.send(InputEvent::Unreachable);
                    } else {
                        outstanding = Some((id, frames));
                    }
                }
                Err(zmq::Error::ETERM) => return,
                Err(_) => {}
            }
        }
        if ready[0] {
            match recv_request(&stdin, signer, &mut guard, max, "stdin") {
                None => return,
                Some(None) => {}
                Some(Some(msg)) if msg.msg_type() == "input_reply" => {
                    if outstanding.as_ref().is_some_and(|(id, _)| id == msg.parent_msg_id()) {
                        outstanding = None;
                    }
                    let _ = events.send(InputEvent::Reply(msg));
                }
                Some(Some(msg)) => log::warn!("stdin: ignored a {:?} message", msg.msg_type()),
            }
        }
        if ready.get(2) == Some(&true) {
            if let Some(m) = &monitor {
                while m.recv_multipart(zmq::DONTWAIT).is_ok() {}
            }
            log::debug!("stdin: a client disconnected");
            if outstanding.is_some() {
                probe_at = Some(Instant::now() + Duration::from_millis(100));
            }
        }
        if probe_at.is_some_and(|t| Instant::now() >= t) {
            probe_at = None;
            if let Some((_, frames)) = &outstanding {
                if stdin.send_multipart(frames.clone(), 0).is_err() {
                    log::info!("stdin: the client waiting for input has disconnected");
                    outstanding = None;
                    let _ = events.send(InputEvent::Unreachable);
                }
            }
        }
    }
}

/// A PAIR socket receiving the stdin socket's disconnect events.
fn stdin_monitor(ctx: &zmq::Context, stdin: &zmq::Socket) -> Result<Option<zmq::Socket>, String> {
    let endpoint = "inproc://stdin-monitor";
    stdin.monitor(endpoint, zmq::SocketEvent::DISCONNECTED as i32).map_err(|e| e.to_string())?;
    let m = ctx.socket(zmq::PAIR).map_err(|e| e.to_string())?;
    m.connect(endpoint).map_err(|e| e.to_string())?;
    Ok(Some(m))
}

/// The Lua thread's view of the outside world while a request runs: iopub publishing with coalesced
/// stream output, and stdin. `lua.rs` reaches it through the [`Host`] trait.
struct Frontend {
    child_output: Arc<ChildOutput>,
    /// This request started child processes: their output is synced once more before the reply.
    children: bool,
    publisher: Publisher,
    stdin: zmq::Socket,
    input_events: Receiver<InputEvent>,
    interrupt_wake: Receiver<()>,
    interrupt: Arc<AtomicBool>,
    input_timeout: Duration,
    /// The request being served: parent of everything published.
    parent: Arc<Message>,
    allow_stdin: bool,
    /// Our own client sends stdin as raw chunks (with EOF) instead of lines.
    raw_stdin: bool,
    /// A silent request publishes no output at all.
    silent: bool,
    pending: Vec<u8>,
    pending_stream: Stream,
    last_flush: Instant,
}

impl Frontend {
    /// Publishes the pending output. Unless `all`, a character cut by a write boundary waits for
    /// its rest; with `all` (end of a request, another message follows) it goes as it is.
    fn flush_output(&mut self, all: bool) {
        let cut = match std::str::from_utf8(&self.pending) {
            Err(e) if !all && e.error_len().is_none() => e.valid_up_to(),
            _ => self.pending.len(),
        };
        if cut == 0 {
            return;
        }
        let rest = self.pending.split_off(cut);
        let text = String::from_utf8_lossy(&std::mem::replace(&mut self.pending, rest)).into_owned();
        let name = match self.pending_stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        self.publisher.publish(&self.parent, "stream", json!({ "name": name, "text": text }));
        self.last_flush = Instant::now();
    }

    fn flush_streams(&mut self) {
        self.flush_output(false);
    }

    fn flush_all(&mut self) {
        self.flush_output(true);
    }

    fn publish(&mut self, msg_type: &str, content: Value) {
        self.flush_all();
        self.publisher.publish(&self.parent, msg_type, content);
    }
}

impl Host for Frontend {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if self.silent {
            return;
        }
        if stream != self.pending_stream {
            self.flush_all();
            self.pending_stream = stream;
        }
        self.pending.extend_from_slice(bytes);
        // The first output after a quiet spell goes out at once (live output); a burst is
        // coalesced into messages of up to 64 KiB or 20 ms.
        if self.pending.len() >= STREAM_FLUSH_BYTES || self.last_flush.elapsed() >= STREAM_FLUSH_INTERVAL {
            self.flush_streams();
        }
    }

    fn tick(&mut self) {
        if !self.pending.is_empty() && self.last_flush.elapsed() >= STREAM_FLUSH_INTERVAL {
            self.flush_streams();
        }
    }

    fn publish(&mut self, msg_type: &str, content: Value) {
        if !self.silent {
            Frontend::publish(self, msg_type, content);
        }
    }

    fn line_input(&self) -> bool {
        !self.raw_stdin
    }

    fn sync_output(&mut self) {
        // Before a child process may run for long: what is held goes out now.
        self.flush_all();
        self.publisher.release();
        self.child_output.sync();
        self.children = true;
    }

    fn input(&mut self, prompt: &str, password: bool) -> Result<Input, InputError> {
        self.flush_all();
        self.publisher.release();
        if !self.allow_stdin {
            return Err(InputError::Failed(
                "stdin is not available: the client did not allow input (allow_stdin is false)".into(),
            ));
        }
        while self.input_events.try_recv().is_ok() {} // stale replies to an earlier, abandoned request
        let mut msg = wire::child(
            &self.parent,
            "input_request",
            self.publisher.session(),
            json!({ "prompt": prompt, "password": password }),
        );
        msg.identities = self.parent.identities.clone();
        let request_id = msg.msg_id().to_string();
        send_frames(&self.stdin, wire::encode(&msg, self.publisher.signer()), "stdin");
        let result = self.wait_input(&request_id);
        if result.is_err() {
            let _ = self.stdin.send(&b""[..], 0); // the stdin thread forgets the request
        }
        result
    }
}

impl Frontend {
    fn wait_input(&mut self, request_id: &str) -> Result<Input, InputError> {
        let deadline = Instant::now() + self.input_timeout;
        loop {
            if self.interrupt.swap(false, Ordering::SeqCst) {
                return Err(InputError::Interrupted);
            }
            select! {
                recv(self.input_events) -> ev => match ev {
                    Ok(InputEvent::Reply(reply)) if reply.parent_msg_id() == request_id
                        || reply.parent_header.get("msg_id").is_none() => {
                        let value = reply.content["value"].as_str().unwrap_or("").to_string();
                        return Ok(if !self.raw_stdin {
                            Input::Line(value)
                        } else if value.is_empty() {
                            Input::Eof
                        } else {
                            Input::Chunk(value)
                        });
                    }
                    Ok(InputEvent::Reply(_)) => continue,
                    Ok(InputEvent::Unreachable) => return Err(InputError::Failed(
                        "the client that asked for this code to run has disconnected".into())),
                    Err(_) => return Err(InputError::Failed("the kernel is shutting down".into())),
                },
                recv(self.interrupt_wake) -> _ => continue,
                default(deadline.saturating_duration_since(Instant::now())) => {
                    return Err(InputError::Failed(format!(
                        "no input arrived within {} s; the client may have gone", self.input_timeout.as_secs())));
                }
            }
        }
    }
}

/// A `Host` handle the interpreter keeps; the core keeps another to the same frontend.
struct SharedHost(std::rc::Rc<std::cell::RefCell<Frontend>>);

impl Host for SharedHost {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        self.0.borrow_mut().write(stream, bytes)
    }
    fn tick(&mut self) {
        self.0.borrow_mut().tick()
    }
    fn publish(&mut self, msg_type: &str, content: Value) {
        Host::publish(&mut *self.0.borrow_mut(), msg_type, content)
    }
    fn input(&mut self, prompt: &str, password: bool) -> Result<Input, InputError> {
        self.0.borrow_mut().input(prompt, password)
    }
    fn line_input(&self) -> bool {
        self.0.borrow().line_input()
    }
    fn sync_output(&mut self) {
        self.0.borrow_mut().sync_output()
    }
}

/// The request loop on the Lua thread: busy/idle, execution counting, history, and dispatch to the
/// interpreter.
struct Core {
    interp: Interpreter,
    frontend: std::rc::Rc<std::cell::RefCell<Frontend>>,
    /// The shell socket: requests are read one at a time, in arrival order, and replied to here
    /// (no hand-off between threads on the request path).
    shell: zmq::Socket,
    guard: ReplayGuard,
    max_message_bytes: usize,
    signer: Signer,
    session: String,
    shared: Arc<Shared>,
    execution_count: u64,
    /// Every cell stored in history: execution_count, code, and its result as text.
    history: Vec<HistoryEntry>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &zmq::Context,
        shell: zmq::Socket,
        publisher: Publisher,
        shared: &Arc<Shared>,
        opts: &Options,
        input_events: Receiver<InputEvent>,
        interrupt_wake: Receiver<()>,
        child_output: Arc<ChildOutput>,
    ) -> Result<Core, String> {
        let frontend = Frontend {
            child_output,
            children: false,
            publisher: publisher.clone(),
            stdin: connected_push(ctx, "inproc://stdin-requests")?,
            input_events,
            interrupt_wake,
            interrupt: shared.interrupt.clone(),
            input_timeout: opts.input_timeout,
            parent: Arc::new(Message::default()),
            allow_stdin: false,
            raw_stdin: false,
            silent: false,
            pending: Vec::new(),
            pending_stream: Stream::Stdout,
            last_flush: Instant::now() - STREAM_FLUSH_INTERVAL,
        };
        let frontend = std::rc::Rc::new(std::cell::RefCell::new(frontend));
        let interp = Interpreter::new(
            Box::new(SharedHost(frontend.clone())),
            shared.interrupt.clone(),
            lua::Options {
                memory_limit: opts.memory_limit_mb.map(|mb| mb << 20),
                state_path: connection::home().join("state.json"),
            },
        )?;
        Ok(Core {
            interp,
            frontend,
            shell,
            guard: ReplayGuard::new(10_000),
            max_message_bytes: opts.max_message_bytes,
            signer: publisher.signer().clone(),
            session: publisher.session().to_string(),
            shared: shared.clone(),
            execution_count: 0,
            history: Vec::new(),
        })
    }

    /// The next request on shell: waiting for one, or only if one is already there.
    fn next_request(&mut self, wait: bool) -> Next {
        loop {
            if !wait && !matches!(self.shell.poll(zmq::POLLIN, 0), Ok(n) if n > 0) {
                return Next::Nothing;
            }
            match recv_request(&self.shell, &self.signer, &mut self.guard, self.max_message_bytes, "shell") {
                None => return Next::Closed,
                Some(None) => continue, // dropped (and logged): look again
                Some(Some(msg)) => {
                    self.shared.touch();
                    return Next::Request(msg);
                }
            }
        }
    }

    fn run(mut self) {
        loop {
            let msg = match self.next_request(true) {
                Next::Request(msg) => Arc::new(msg),
                Next::Nothing => continue,
                Next::Closed => return,
            };
            self.shared.busy.store(true, Ordering::Relaxed);
            // A bug in a handler must cost one request, not the shell for good.
            let failed = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(&msg))) {
                Ok(failed) => failed,
                Err(_) => {
                    log::error!("internal error while serving a {} (see the panic above)", msg.msg_type());
                    self.reply(
                        &msg,
                        json!({
                            "status": "error", "ename": "InternalError",
                            "evalue": "the kernel failed serving this request; see its log", "traceback": [],
                            "execution_count": self.execution_count,
                        }),
                    );
                    true
                }
            };
            if failed && msg.content["stop_on_error"].as_bool().unwrap_or(true) {
                // Abort the execute requests queued behind the failed one, as ipykernel does. This
                // happens before the failed request's idle: a client that waits for idle and then
                // sends more code must not see it aborted.
                // Only the failed client's own requests: other clients of a shared kernel did not
                // ask to depend on it.
                let session = msg.header["session"].clone();
                while let Next::Request(next) = self.next_request(false) {
                    let next = Arc::new(next);
                    if next.msg_type() == "execute_request" && next.header["session"] == session {
                        self.begin(&next);
                        self.reply(
                            &next,
                            json!({"status": "aborted", "execution_count": self.execution_count}),
                        );
                        self.end(&next);
                    } else {
                        let _ = self.handle(&next);
                        self.end(&next);
                    }
                }
            }
            self.end(&msg);
            self.shared.touch();
            self.shared.busy.store(false, Ordering::Relaxed);
        }
    }

    fn begin(&self, msg: &Arc<Message>) {
        let mut f = self.frontend.borrow_mut();
        f.parent = msg.clone();
        f.silent = false;
        f.publisher.publish_held(msg, "status", json!({ "execution_state": "busy" }));
    }

    fn end(&self, msg: &Message) {
        let mut f = self.frontend.borrow_mut();
        f.flush_all();
        f.publisher.status(msg, "idle");
    }

    fn reply(&self, req: &Message, content: Value) {
        // busy (and execute_input) go before the reply, as clients expect.
        self.frontend.borrow().publisher.release();
        reply(&self.shell, &self.signer, &self.session, req, content);
    }

    fn publish(&self, msg_type: &str, content: Value) {
        self.frontend.borrow_mut().publish(msg_type, content);
    }

    /// Serves one shell request up to its reply (the caller publishes idle); true if it was an
    /// execute request that failed.
    fn handle(&mut self, msg: &Arc<Message>) -> bool {
        self.begin(msg);
        let c = &msg.content;
        let mut failed = false;
        match msg.msg_type() {
            "execute_request" => failed = self.execute(msg),
            "kernel_info_request" => {
                self.reply(msg, kernel_info_content(self.frontend.borrow().publisher.counts()))
            }
            "complete_request" => {
                let code = c["code"].as_str().unwrap_or("");
                let cursor = byte_offset(code, c["cursor_pos"].as_u64());
                let (matches, start, end) = self.interp.complete(code, cursor);
                self.reply(
                    msg,
                    json!({
                        "status": "ok",
                        "matches": matches,
                        "cursor_start": char_offset(code, start),
                        "cursor_end": char_offset(code, end),
                        "metadata": {},
                    }),
                );
            }
            "inspect_request" => {
                let code = c["code"].as_str().unwrap_or("");
                let cursor = byte_offset(code, c["cursor_pos"].as_u64());
                let doc = self.interp.inspect(code, cursor);
                let data = doc.as_ref().map(|d| json!({ "text/plain": d })).unwrap_or(json!({}));
                self.reply(
                    msg,
                    json!({"status": "ok", "found": doc.is_some(), "data": data, "metadata": {}}),
                );
            }
            "is_complete_request" => {
                let content = match self.interp.is_complete(c["code"].as_str().unwrap_or("")) {
                    Completeness::Complete => json!({"status": "complete"}),
                    Completeness::Incomplete(indent) => json!({"status": "incomplete", "indent": indent}),
                    Completeness::Invalid => json!({"status": "invalid"}),
                };
                self.reply(msg, content);
            }
            "history_request" => {
                let history = self.history_query(c);
                self.reply(msg, json!({"status": "ok", "history": history}));
            }
            "comm_info_request" => self.reply(msg, json!({"status": "ok", "comms": {}})),
            "comm_open" => {
                // No comm targets exist in this kernel: close what a client opens, as the spec asks.
                let id = c["comm_id"].clone();
                self.publish("comm_close", json!({ "comm_id": id, "data": {} }));
            }
            "comm_msg" | "comm_close" => {}
            "shutdown_request" => {
                let restart = c["restart"].as_bool().unwrap_or(false);
                self.reply(msg, json!({"status": "ok", "restart": restart}));
                let _ = self.shared.exit.send(Exit::Shutdown);
            }
            "interrupt_request" => self.reply(msg, json!({"status": "ok"})),
            t if t.ends_with("_request") => self.reply(msg, unsupported(msg)),
            other => log::warn!("shell: ignored a {other:?} message"),
        }
        failed
    }

    fn execute(&mut self, msg: &Message) -> bool {
        let c = &msg.content;
        let code = c["code"].as_str().unwrap_or("").to_string();
        let silent = c["silent"].as_bool().unwrap_or(false);
        let store_history = c["store_history"].as_bool().unwrap_or(true) && !silent;
        let ours = &msg.metadata["llmspell"];
        {
            let mut f = self.frontend.borrow_mut();
            f.allow_stdin = c["allow_stdin"].as_bool().unwrap_or(false);
            f.raw_stdin = ours["stdin"] == "raw";
            f.silent = silent;
        }
        if store_history {
            self.execution_count += 1;
            self.history.push(HistoryEntry { line: self.execution_count, input: code.clone(), output: None });
        }
        let count = self.execution_count;
        if !silent {
            let content = json!({ "code": code, "execution_count": count });
            self.frontend.borrow().publisher.publish_held(msg, "execute_input", content);
        }
        let script = ours.get("run").map(|run| lua::Script {
            name: run["name"].as_str().unwrap_or("script").to_string(),
            args: run["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
        });
        // A stale interrupt (sent while nothing ran) must not kill this cell.
        self.shared.interrupt.store(false, Ordering::SeqCst);
        let child_output = self.frontend.borrow().child_output.clone();
        child_output.set_parent(Some(self.frontend.borrow().parent.clone()));
        self.frontend.borrow_mut().children = false;
        let outcome = self.interp.execute(&code, script.as_ref());
        if self.frontend.borrow().children {
            // A child may still have been writing (io.popen's stderr): publish that first. (Only
            // then: the round trip to the forwarding thread is not free.)
            self.frontend.borrow_mut().sync_output();
        }
        child_output.set_parent(None);
        let mut user_expressions = serde_json::Map::new();
        if outcome.error.is_none() {
            if let Some(exprs) = c["user_expressions"].as_object() {
                for (name, expr) in exprs {
                    let v = match self.interp.evaluate(expr.as_str().unwrap_or("")) {
                        Ok(data) => json!({"status": "ok", "data": data, "metadata": {}}),
                        Err(e) => {
                            json!({"status": "error", "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback})
                        }
                    };
                    user_expressions.insert(name.clone(), v);
                }
            }
        }
        if store_history {
            if let (Some(entry), Some(data)) = (self.history.last_mut(), &outcome.result) {
                entry.output = data["text/plain"].as_str().map(String::from);
            }
        }
        if !silent {
            if let Some(data) = &outcome.result {
                self.publish(
                    "execute_result",
                    json!({ "execution_count": count, "data": data, "metadata": {} }),
                );
            }
            if let Some(e) = &outcome.error {
                self.publish(
                    "error",
                    json!({ "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback }),
                );
            }
        }
        let payload: Vec<Value> = outcome
            .pages
            .iter()
            .map(|text| json!({ "source": "page", "data": { "text/plain": text }, "start": 0 }))
            .collect();
        let mut content = match &outcome.error {
            None => {
                json!({ "status": "ok", "execution_count": count, "payload": payload, "user_expressions": user_expressions })
            }
            Some(e) => json!({
                "status": "error", "execution_count": count, "ename": e.ename, "evalue": e.evalue,
                "traceback": e.traceback, "payload": payload, "user_expressions": {},
            }),
        };
        if let Some(code) = outcome.exit_code {
            content["llmspell_exit_code"] = json!(code);
        }
        self.frontend.borrow_mut().flush_all();
        self.reply(msg, content);
        outcome.error.is_some()
    }

    /// history_request: tail, range and search over this kernel's cells (session number 0 = current).
    fn history_query(&self, c: &Value) -> Vec<Value> {
        let with_output = c["output"].as_bool().unwrap_or(false);
        let entry = |e: &&HistoryEntry| {
            if with_output {
                json!([0, e.line, [e.input, e.output]])
            } else {
                json!([0, e.line, e.input])
            }
        };
        let n = c["n"].as_u64().unwrap_or(10) as usize;
        let selected: Vec<&HistoryEntry> = match c["hist_access_type"].as_str().unwrap_or("tail") {
            "range" => {
                let start = c["start"].as_u64().unwrap_or(1);
                let stop = c["stop"].as_u64().unwrap_or(u64::MAX);
                self.history.iter().filter(|e| e.line >= start && e.line < stop).collect()
            }
            "search" => {
                let pattern = c["pattern"].as_str().unwrap_or("*");
                let unique = c["unique"].as_bool().unwrap_or(false);
                let mut seen = std::collections::HashSet::new();
                let mut hits: Vec<&HistoryEntry> = self
                    .history
                    .iter()
                    .rev()
                    .filter(|e| glob_match(pattern, &e.input))
                    .filter(|e| !unique || seen.insert(e.input.clone()))
                    .take(if c["n"].is_null() { usize::MAX } else { n })
                    .collect();
                hits.reverse();
                hits
            }
            _ => self.history[self.history.len().saturating_sub(n)..].iter().collect(),
        };
        selected.iter().map(entry).collect()
    }
}

struct HistoryEntry {
    line: u64,
    input: String,
    output: Option<String>,
}

enum Next {
    Request(Message),
    Nothing,
    Closed,
}

/// Shell-style glob: `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The protocol counts cursor positions in Unicode code points; Rust strings index bytes.
fn byte_offset(code: &str, cursor: Option<u64>) -> usize {
    match cursor {
        None => code.len(),
        Some(n) => code.char_indices().nth(n as usize).map(|(i, _)| i).unwrap_or(code.len()),
    }
}

fn char_offset(code: &str, byte: usize) -> usize {
    code[..byte.min(code.len())].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_the_history_search_expects() {
        assert!(glob_match("1?2*", "1+2"));
        assert!(glob_match("1?2*", "1+2 -- more"));
        assert!(!glob_match("1?2*", "12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*print*", "x = 1 print(x)"));
        assert!(!glob_match("a", "b"));
    }

    #[test]
    fn cursor_offsets_count_code_points() {
        let code = "é = 1; s:up";
        assert_eq!(byte_offset(code, Some(1)), 2);
        assert_eq!(char_offset(code, 2), 1);
        assert_eq!(byte_offset(code, None), code.len());
        assert_eq!(byte_offset(code, Some(999)), code.len());
    }

    #[test]
    fn reply_types_follow_the_request_names() {
        assert_eq!(reply_type("execute_request"), "execute_reply");
        assert_eq!(reply_type("odd"), "odd_reply");
    }
}
