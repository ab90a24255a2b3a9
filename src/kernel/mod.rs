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

mod channels;
mod child_output;
pub(crate) mod debugger;
mod frontend;
mod gateway_comm;
pub mod gateway_launch;
mod gateway_payload;
mod history;
mod history_file;
mod iopub;
mod memory;
mod owner;
mod remote_run;
mod requests;
mod shell;

pub use requests::kernel_info_content;

use crate::connection::{self, ConnectionInfo, KernelFiles};
use crate::wire::{self, Signer};
use child_output::ChildOutput;
use crossbeam_channel::{Receiver, Sender};
use frontend::Frontend;
use fs2::FileExt;
use iopub::{IopubSocket, Publisher};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Launched by Enterprise Gateway on a remote host (`--RemoteProcessProxy.*`): the ports come
    /// from its range and the connection info goes to it, not to a file.
    pub gateway: Option<gateway_launch::Launch>,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// What tells the main thread to stop.
enum Exit {
    Shutdown,
    Idle,
    Signal(i32),
}

/// Shared between threads: the interrupt flag, the time of the last request, whether a request runs.
struct Shared {
    interrupt: Arc<crate::lua::Interrupter>,
    interrupt_wake: Sender<()>,
    last_request: AtomicU64,
    busy: AtomicBool,
    exit: Sender<Exit>,
    /// The Jupyter debugger's state (control and Lua thread share it).
    debugger: Arc<debugger::Debugger>,
    /// The zygote's socket (`runner::Zygote`), for isolated remote runs; None without a zygote.
    run_socket: Option<PathBuf>,
    /// Woken on every interrupt: what a wait outside Lua polls (an isolated remote
    /// run, `remote_run.rs`), where the wake channel above cannot be polled with fds.
    interrupt_fd: Option<crate::sys::Wakeup>,
    /// The session's names for editors (`llmspell_snapshot_request`), replaced by the Lua thread
    /// between cells and read by control at any time: control never waits on Lua.
    live: std::sync::Mutex<LiveSnapshot>,
    /// A cell has ended since the snapshot was taken.
    live_stale: AtomicBool,
    /// When an editor last asked for the snapshot (ms since the epoch): while one watches, the Lua
    /// thread takes it as each execution ends; otherwise only when asked.
    live_asked: AtomicU64,
    /// Control's end of `LIVE_WAKE`: asks an idle Lua thread for a fresh snapshot.
    live_wake: std::sync::Mutex<Option<zmq::Socket>>,
}

/// The inproc endpoint on which control asks the Lua thread, between cells, for a new snapshot.
const LIVE_WAKE: &str = "inproc://live-snapshot";
/// An editor that asked within this long is watching.
const LIVE_WATCHED_MS: u64 = 30_000;

/// The last snapshot of the session's globals and state keys (`lua::Interpreter::live_snapshot`),
/// numbered: the generation grows each time the snapshot changes.
#[derive(Default)]
struct LiveSnapshot {
    generation: u64,
    snapshot: Arc<serde_json::Value>,
}

impl Shared {
    fn new(exit: Sender<Exit>, interrupt_wake: Sender<()>) -> Shared {
        Shared {
            interrupt: Arc::default(),
            interrupt_wake,
            last_request: AtomicU64::new(now_millis()),
            busy: AtomicBool::new(false),
            exit,
            debugger: Arc::new(debugger::Debugger::new()),
            run_socket: None,
            interrupt_fd: crate::sys::Wakeup::new().ok(),
            live: std::sync::Mutex::default(),
            live_stale: AtomicBool::new(false),
            live_asked: AtomicU64::new(0),
            live_wake: std::sync::Mutex::new(None),
        }
    }
    /// Keeps a new snapshot of the session (a new generation only if it differs from the last).
    fn set_live(&self, snapshot: serde_json::Value) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.generation == 0 || *live.snapshot != snapshot {
            live.generation += 1;
            live.snapshot = Arc::new(snapshot);
        }
    }
    /// Whether the Lua thread should take a snapshot now that an execution has ended.
    fn live_watched(&self) -> bool {
        now_millis().saturating_sub(self.live_asked.load(Ordering::Relaxed)) < LIVE_WATCHED_MS
    }
    /// An editor asked: remember it, and wake the Lua thread if the snapshot is behind the session
    /// (it takes one once idle; the editor gets it on its next ask).
    fn live_asked_now(&self) {
        self.live_asked.store(now_millis(), Ordering::Relaxed);
        if self.live_stale.load(Ordering::Relaxed) {
            if let Some(wake) = &*self.live_wake.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = wake.send(&b""[..], zmq::DONTWAIT);
            }
        }
    }
    fn touch(&self) {
        self.last_request.store(now_millis(), Ordering::Relaxed);
    }
    fn interrupt(&self) {
        self.interrupt.interrupt();
        let _ = self.interrupt_wake.try_send(());
        // A program stopped in the debugger resumes, so the interrupt reaches it.
        self.debugger.on_interrupt();
        if let Some(wake) = &self.interrupt_fd {
            wake.wake();
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs a kernel until it is shut down. Errors are one line for the user.
pub fn start(opts: Options) -> Result<(), String> {
    memory::tune_allocator();
    let Claimed { info_in, own_files, lock: _lock } = claim_files(&opts)?;
    // The address we bind: the launcher's connection file has the last word.
    let ip = info_in.as_ref().map_or(opts.ip.as_str(), |i| i.ip.as_str());
    if ip != "127.0.0.1" && ip != "localhost" && ip != "::1" {
        log::warn!(
            "binding {ip}: anyone who can reach this address and holds the key can run code as this user"
        );
    }
    let key = match &info_in {
        Some(i) => i.key.clone(),
        None => wire::random_hex(32),
    };
    let ctx = zmq::Context::new();
    let ports = opts.gateway.as_ref().map(|g| g.ports).unwrap_or(gateway_launch::PortRange::ANY);
    let sockets = Sockets::bind(&ctx, info_in.as_ref(), &opts.ip, &ports)?;
    let mut info = sockets.info(info_in.as_ref(), &opts.ip, &key);
    info.pid = Some(std::process::id());
    let comm = match &opts.gateway {
        Some(_) => Some(gateway_launch::bind_comm_port(&opts.ip, &ports)?),
        None => None,
    };
    // The zygote of `llmspell run`: its socket is bound before the connection file says we are up.
    let _runner = crate::runner::Zygote::start_for(own_files.as_ref(), &key);
    if let Some(files) = &own_files {
        info.write(&files.connection)
            .map_err(|e| format!("cannot write {}: {e}", files.connection.display()))?;
    }
    log::info!("kernel {} listening on {} (shell {})", opts.id, info.ip, info.shell_port);

    if let (Some(launch), Some(comm)) = (&opts.gateway, &comm) {
        // Before the threads start (they take over fds 1 and 2), so a failure is the one line the
        // user sees. EG may connect at once: the sockets are bound and queue what it sends.
        launch.announce(&info, comm.local_addr().map(|a| a.port()).unwrap_or(0))?;
    }

    let run_socket = _runner.as_ref().map(|z| z.socket().to_path_buf());
    let running = Threads::spawn(&ctx, sockets, Signer::new(&key), &opts, run_socket)?;
    watch_signals(running.shared.clone())?;
    if let Some(comm) = comm {
        gateway_comm::serve(comm, running.shared.clone());
    }
    // A file-size limit must fail the write (EFBIG, reported by state), not kill the kernel.
    // SAFETY: setting a signal disposition to SIG_IGN has no handler code to be unsafe.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    match wait_for_exit(&running.exit, &running.shared, opts.idle_timeout) {
        Exit::Shutdown => log::info!("shutting down on request"),
        Exit::Signal(s) => log::info!("shutting down on signal {s}"),
        Exit::Idle => {
            // The next command that starts this id again tells its user the session is new.
            if let Some(files) = &own_files {
                let _ = crate::private_files::write_private_atomic(&files.idle_marker, b"idle timeout\n");
            }
        }
    }
    log::info!("iopub since start: {}", running.iopub.counts());
    let debugger = running.shared.debugger.clone();
    running.stop(ctx);
    debugger.remove_files();
    if let Some(files) = &own_files {
        files.remove_stale();
    }
    log::logger().flush();
    Ok(())
}

/// The connection we were given, or the files that are ours.
struct Claimed {
    /// The launcher's connection file (Jupyter), if it gave one.
    info_in: Option<ConnectionInfo>,
    own_files: Option<KernelFiles>,
    /// Held for the kernel's whole life.
    lock: Option<File>,
}

/// Which files are ours: with --connection-file the launcher (Jupyter) owns it; launched by
/// Enterprise Gateway there is no connection file at all; otherwise we write kernels/<id>.json and
/// hold kernels/<id>.lock for our whole life.
fn claim_files(opts: &Options) -> Result<Claimed, String> {
    if opts.gateway.is_some() {
        return Ok(Claimed { info_in: None, own_files: None, lock: None });
    }
    if let Some(path) = &opts.connection_file {
        return Ok(Claimed { info_in: Some(ConnectionInfo::read(path)?), own_files: None, lock: None });
    }
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
    Ok(Claimed { info_in: None, own_files: Some(files), lock: Some(lock) })
}

/// The kernel's threads, running; what the main thread needs to wait for them and stop them.
struct Threads {
    shared: Arc<Shared>,
    exit: Receiver<Exit>,
    child_output: Arc<ChildOutput>,
    /// A handle on iopub for its counters.
    iopub: Publisher,
}

impl Threads {
    /// Starts every thread (see the module's comment); returns once the Lua thread is ready.
    fn spawn(
        ctx: &zmq::Context,
        sockets: Sockets,
        signer: Signer,
        opts: &Options,
        run_socket: Option<PathBuf>,
    ) -> Result<Threads, String> {
        let (exit_tx, exit) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared { run_socket, ..Shared::new(exit_tx, wake_tx) });
        *shared.live_wake.lock().unwrap_or_else(|e| e.into_inner()) = connected_push(ctx, LIVE_WAKE).ok();
        let ownership = owner::Ownership::new()?;
        {
            let (ownership, shared) = (ownership.clone(), shared.clone());
            spawn("owner", move || ownership.watch(&shared));
        }
        let (input_tx, input_rx) = crossbeam_channel::unbounded::<channels::InputEvent>();
        // The inproc PULL end is bound before any thread connects to it.
        let Sockets { shell, control, stdin, iopub, hb } = sockets;
        let stdin_pull = bound_pull(ctx, "inproc://stdin-requests")?;
        let debug_replies = bound_pull(ctx, debugger::REPLIES_ENDPOINT)?;
        let iopub_fd = iopub.get_fd().map_err(|e| format!("cannot watch the iopub socket: {e}"))?;
        let publisher = Publisher::new(IopubSocket::new(iopub, signer.clone(), wire::random_hex(16))?);
        let child_output = ChildOutput::start(publisher.clone())?;
        let max = opts.max_message_bytes;
        spawn("heartbeat", move || channels::heartbeat(hb));
        let iopub_socket = publisher.iopub.clone();
        spawn("iopub", move || iopub::iopub_loop(iopub_socket, iopub_fd));
        {
            let (signer, shared, ownership) = (signer.clone(), shared.clone(), ownership.clone());
            // Control answers even while a publisher waits for a stalled subscriber.
            let publisher = publisher.never_waiting();
            spawn("control", move || {
                channels::control_loop(control, debug_replies, publisher, &signer, &shared, &ownership, max)
            });
        }
        let stdin_ctx = ctx.clone();
        spawn("stdin", move || channels::stdin_loop(&stdin_ctx, stdin, stdin_pull, input_tx, &signer, max));
        let iopub = publisher.never_waiting();
        let frontend = FrontendParts { child_output: child_output.clone(), publisher, input_rx, wake_rx };
        spawn_lua(ctx, shell, frontend, &shared, ownership, opts)?;
        Ok(Threads { shared, exit, child_output, iopub })
    }

    /// Stops everything: interrupts running Lua, then terminates the context, which wakes every
    /// blocked socket with ETERM and waits (bounded by LINGER) for queued replies to leave. A thread
    /// stuck in native code must not keep the process alive, so the wait is bounded.
    fn stop(self, ctx: zmq::Context) {
        self.shared.interrupt();
        self.child_output.stop();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        std::thread::spawn(move || {
            let mut ctx = ctx;
            let _ = ctx.destroy();
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
    }
}

/// What the Lua thread's frontend is made of.
struct FrontendParts {
    child_output: Arc<ChildOutput>,
    publisher: Publisher,
    input_rx: Receiver<channels::InputEvent>,
    wake_rx: Receiver<()>,
}

/// The Lua thread: builds the interpreter there (a Lua state is not `Send`) and serves shell.
fn spawn_lua(
    ctx: &zmq::Context,
    shell: zmq::Socket,
    parts: FrontendParts,
    shared: &Arc<Shared>,
    ownership: Arc<owner::Ownership>,
    opts: &Options,
) -> Result<(), String> {
    let (ctx, shared, opts) = (ctx.clone(), shared.clone(), opts.clone());
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    spawn("lua", move || {
        let frontend = connected_push(&ctx, "inproc://stdin-requests").map(|stdin| {
            let FrontendParts { child_output, publisher, input_rx, wake_rx } = parts;
            let interrupt = shared.interrupt.clone();
            Frontend::new(child_output, publisher, stdin, input_rx, wake_rx, interrupt, opts.input_timeout)
        });
        match frontend
            .and_then(|frontend| shell::Shell::new(&ctx, shell, frontend, &shared, ownership, &opts))
        {
            Ok(shell) => {
                let _ = ready_tx.send(Ok(()));
                shell.run();
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx.recv().map_err(|_| "the Lua thread died while starting".to_string())?
}

fn wait_for_exit(exit_rx: &Receiver<Exit>, shared: &Shared, idle: Option<Duration>) -> Exit {
    loop {
        let Some(idle) = idle else {
            return exit_rx.recv().unwrap_or(Exit::Shutdown);
        };
        // runner (issue 12): a run in progress, or one that just ended, counts as a request.
        if let Some((active, last)) = crate::runner::activity() {
            shared.last_request.fetch_max(if active > 0 { now_millis() } else { last }, Ordering::Relaxed);
        }
        let since =
            Duration::from_millis(now_millis().saturating_sub(shared.last_request.load(Ordering::Relaxed)));
        if since >= idle && !shared.busy.load(Ordering::Relaxed) {
            log::info!("no request for {}s: idle timeout", since.as_secs());
            return Exit::Idle;
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
    /// Binds the five channels: on the connection file's ports, or on free ports in `range` (any
    /// the OS picks when the range is empty).
    fn bind(
        ctx: &zmq::Context,
        info: Option<&ConnectionInfo>,
        ip: &str,
        range: &gateway_launch::PortRange,
    ) -> Result<Sockets, String> {
        let make = |kind, port: Option<u16>| -> Result<zmq::Socket, String> {
            let s = ctx.socket(kind).map_err(|e| format!("cannot create a socket: {e}"))?;
            s.set_linger(1000).map_err(|e| e.to_string())?;
            match (info, port) {
                (Some(i), Some(p)) => {
                    let endpoint = i.endpoint(p);
                    s.bind(&endpoint).map_err(|e| format!("cannot bind {endpoint}: {e}"))?;
                }
                _ if range.is_any() => {
                    let endpoint = format!("tcp://{}:*", bracket(ip));
                    s.bind(&endpoint).map_err(|e| format!("cannot bind {endpoint}: {e}"))?;
                }
                _ => range
                    .bind(|p| s.bind(&format!("tcp://{}:{p}", bracket(ip))))
                    .map_err(|e| format!("cannot bind a kernel port on {ip}: {e}"))?,
            }
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
        iopub::configure(&mut sockets.iopub)?;
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
