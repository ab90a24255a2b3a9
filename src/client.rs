//! The ZeroMQ client behind `run`, `exec`, `repl` and kernel management: connects to a kernel through
//! its connection file, finds or spawns our own kernels, and runs code with live output.

use crate::connection::{self, ConnectionInfo, KernelFiles};
use crate::wire::{self, Message, Signer};
use fs2::FileExt;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A client failure: what to tell the user. The caller decides the exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The kernel stopped answering (died, or was shut down) while we waited.
    KernelDied(String),
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ClientError::KernelDied(m) | ClientError::Other(m) => write!(f, "{m}"),
        }
    }
}

impl From<String> for ClientError {
    fn from(s: String) -> Self {
        ClientError::Other(s)
    }
}

/// How we know whether the kernel is still alive while waiting.
enum Liveness {
    /// Our own kernel: its lock file is held while it lives.
    Lock(KernelFiles),
    /// A foreign kernel: ask its heartbeat.
    Heartbeat,
}

pub struct Client {
    pub info: ConnectionInfo,
    pub connection_file: PathBuf,
    ctx: zmq::Context,
    shell: zmq::Socket,
    iopub: zmq::Socket,
    stdin: zmq::Socket,
    control: zmq::Socket,
    signer: Signer,
    session: String,
    liveness: Liveness,
    /// Bytes of stdin read but not yet sent (an incomplete UTF-8 character).
    stdin_carry: Vec<u8>,
}

/// What `execute` reports as it goes.
pub enum Event<'a> {
    Stream {
        name: &'a str,
        text: &'a str,
    },
    /// execute_result or display_data: the mime bundle.
    Display {
        data: &'a Value,
        execution_count: Option<u64>,
    },
    Error {
        traceback: Vec<String>,
    },
    ClearOutput,
}

/// How stdin requests are answered.
#[derive(Clone, Copy, PartialEq)]
pub enum StdinMode {
    /// No input: io.read fails in the kernel.
    None,
    /// Raw chunks of our stdin, with EOF (run, exec).
    Raw,
    /// One line per request, asked by the given callback (the REPL).
    Lines,
}

pub struct ExecOptions<'a> {
    pub silent: bool,
    pub store_history: bool,
    pub stdin: StdinMode,
    /// Set for `llmspell run`: the script's name and arguments.
    pub script: Option<(&'a str, &'a [String])>,
}

/// The final reply of an execute request.
pub struct ExecReply {
    pub content: Value,
}

impl ExecReply {
    pub fn status(&self) -> &str {
        self.content["status"].as_str().unwrap_or("error")
    }
    pub fn ename(&self) -> &str {
        self.content["ename"].as_str().unwrap_or("")
    }
    /// Texts the kernel asked to show in a pager (`help()`), from the reply's payload.
    pub fn pages(&self) -> Vec<&str> {
        self.content["payload"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["source"] == "page")
            .filter_map(|p| p["data"]["text/plain"].as_str())
            .collect()
    }
}

impl Client {
    /// Connects to the kernel described by a connection file and waits until it answers.
    pub fn connect_file(path: &Path, timeout: Duration) -> Result<Client, String> {
        let info = ConnectionInfo::read(path)?;
        let files = own_kernel_files(path);
        let liveness = match files {
            Some(f) => Liveness::Lock(f),
            None => Liveness::Heartbeat,
        };
        let client = Client::open(info, path.to_path_buf(), liveness)?;
        client.handshake(timeout)?;
        Ok(client)
    }

    fn open(info: ConnectionInfo, connection_file: PathBuf, liveness: Liveness) -> Result<Client, String> {
        let ctx = zmq::Context::new();
        let session = wire::random_hex(16);
        let make = |kind, port: u16| -> Result<zmq::Socket, String> {
            let s = ctx.socket(kind).map_err(|e| e.to_string())?;
            s.set_linger(1000).map_err(|e| e.to_string())?;
            if kind == zmq::DEALER {
                // The kernel routes stdin requests to the identity of our shell socket.
                s.set_identity(session.as_bytes()).map_err(|e| e.to_string())?;
            }
            if kind == zmq::SUB {
                s.set_subscribe(b"").map_err(|e| e.to_string())?;
                s.set_rcvhwm(0).map_err(|e| e.to_string())?;
            }
            let endpoint = info.endpoint(port);
            s.connect(&endpoint).map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
            Ok(s)
        };
        Ok(Client {
            shell: make(zmq::DEALER, info.shell_port)?,
            iopub: make(zmq::SUB, info.iopub_port)?,
            stdin: make(zmq::DEALER, info.stdin_port)?,
            control: make(zmq::DEALER, info.control_port)?,
            signer: Signer::new(&info.key),
            session,
            ctx,
            info,
            connection_file,
            liveness,
            stdin_carry: Vec::new(),
        })
    }

    /// Waits until the kernel answers and our iopub subscription is live (an iopub message reached
    /// us), so no output of the first request can be missed. It asks on control, which a kernel
    /// answers even while another client's code runs: our request then simply queues on shell.
    fn handshake(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut replied = false;
        let mut subscribed = false;
        let mut pending = self.send(&self.control, "kernel_info_request", json!({}), json!({}));
        let mut last_nudge = Instant::now();
        while !(replied && subscribed) {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "the kernel of {} does not answer (waited {} ms)",
                    self.connection_file.display(),
                    timeout.as_millis()
                ));
            }
            if !self.alive() {
                return Err(format!("the kernel of {} is not running", self.connection_file.display()));
            }
            let mut items = [self.control.as_poll_item(zmq::POLLIN), self.iopub.as_poll_item(zmq::POLLIN)];
            let wait = (deadline - now).min(Duration::from_millis(100));
            zmq::poll(&mut items, wait.as_millis() as i64).map_err(|e| e.to_string())?;
            if items[0].is_readable() {
                if let Some(m) = self.recv(&self.control) {
                    replied |= m.parent_msg_id() == pending;
                }
            }
            if items[1].is_readable() && self.recv(&self.iopub).is_some() {
                subscribed = true;
            }
            // Kernels without iopub_welcome: another request makes them publish a status message.
            if replied && !subscribed && last_nudge.elapsed() > Duration::from_millis(50) {
                pending = self.send(&self.control, "kernel_info_request", json!({}), json!({}));
                last_nudge = Instant::now();
            }
        }
        Ok(())
    }

    fn send(&self, socket: &zmq::Socket, msg_type: &str, content: Value, metadata: Value) -> String {
        let msg = Message {
            header: wire::header(msg_type, &self.session),
            parent_header: json!({}),
            metadata,
            content,
            ..Message::default()
        };
        let id = msg.msg_id().to_string();
        let _ = socket.send_multipart(wire::encode(&msg, &self.signer), 0);
        id
    }

    fn recv(&self, socket: &zmq::Socket) -> Option<Message> {
        let frames = socket.recv_multipart(0).ok()?;
        wire::decode(frames, &self.signer).ok()
    }

    /// Whether the kernel process is still there.
    pub fn alive(&self) -> bool {
        match &self.liveness {
            Liveness::Lock(files) => files.is_alive(),
            Liveness::Heartbeat => self.heartbeat(Duration::from_secs(1)),
        }
    }

    fn heartbeat(&self, timeout: Duration) -> bool {
        let Ok(hb) = self.ctx.socket(zmq::REQ) else { return false };
        let _ = hb.set_linger(0);
        if hb.connect(&self.info.endpoint(self.info.hb_port)).is_err() || hb.send("ping", 0).is_err() {
            return false;
        }
        matches!(hb.poll(zmq::POLLIN, timeout.as_millis() as i64), Ok(n) if n > 0)
    }

    /// A simple request on shell: waits for its reply.
    pub fn request(&self, msg_type: &str, content: Value, timeout: Duration) -> Result<Value, ClientError> {
        let id = self.send(&self.shell, msg_type, content, json!({}));
        self.wait_reply(&self.shell, &id, timeout)
    }

    /// A request on control: waits for its reply.
    pub fn control_request(
        &self,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let id = self.send(&self.control, msg_type, content, json!({}));
        self.wait_reply(&self.control, &id, timeout)
    }

    fn wait_reply(&self, socket: &zmq::Socket, id: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::KernelDied("the kernel did not answer in time".into()));
            }
            match socket.poll(zmq::POLLIN, left.min(Duration::from_millis(500)).as_millis() as i64) {
                Ok(n) if n > 0 => {
                    if let Some(m) = self.recv(socket) {
                        if m.parent_msg_id() == id {
                            return Ok(m.content);
                        }
                    }
                }
                _ => {
                    if !self.alive() {
                        return Err(ClientError::KernelDied("the kernel died".into()));
                    }
                }
            }
        }
    }

    /// Sends an interrupt request (control channel) without waiting for it.
    pub fn interrupt(&self) {
        self.send(&self.control, "interrupt_request", json!({}), json!({}));
    }

    /// Runs code, reporting output as it arrives, until the reply and the kernel's idle for it.
    /// `sigint` is a file descriptor that becomes readable on Ctrl-C; `on_input` answers line input.
    pub fn execute(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> Option<String>,
    ) -> Result<ExecReply, ClientError> {
        let mut metadata = json!({});
        if opts.stdin == StdinMode::Raw {
            metadata["llmspell"]["stdin"] = json!("raw");
        }
        if let Some((name, args)) = opts.script {
            metadata["llmspell"]["run"] = json!({ "name": name, "args": args });
        }
        let content = json!({
            "code": code,
            "silent": opts.silent,
            "store_history": opts.store_history,
            "user_expressions": {},
            "allow_stdin": opts.stdin != StdinMode::None,
            "stop_on_error": false,
        });
        let id = self.send(&self.shell, "execute_request", content, metadata);
        let mut reply: Option<Value> = None;
        let mut idle = false;
        let mut interrupts = 0;
        let mut waiting_input: Option<Message> = None;
        // The kernel repeats an input request when it must check we are still here: answer once.
        let mut asked: Vec<String> = Vec::new();
        let mut quiet_since = Instant::now();
        while reply.is_none() || !idle {
            let stdin_fd =
                if waiting_input.is_some() && opts.stdin == StdinMode::Raw { Some(0) } else { None };
            let mut items = vec![
                self.shell.as_poll_item(zmq::POLLIN),
                self.iopub.as_poll_item(zmq::POLLIN),
                self.stdin.as_poll_item(zmq::POLLIN),
            ];
            if let Some(fd) = sigint {
                items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
            }
            if let Some(fd) = stdin_fd {
                items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
            }
            match zmq::poll(&mut items, 500) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(ClientError::Other(e.to_string())),
            }
            // A pipe whose writer has gone reports POLLHUP, which zmq::poll shows as an error: it
            // means "read now and see EOF", so it counts as readable.
            let readable: Vec<bool> = items.iter().map(|i| i.is_readable() || i.is_error()).collect();
            drop(items);
            if !readable.iter().any(|r| *r) {
                // Nothing for a while: make sure the kernel is still there.
                if quiet_since.elapsed() >= Duration::from_millis(500) && !self.alive() {
                    return Err(ClientError::KernelDied("the kernel died while running the code".into()));
                }
                continue;
            }
            quiet_since = Instant::now();
            if readable[0] {
                if let Some(m) = self.recv(&self.shell) {
                    if m.parent_msg_id() == id && m.msg_type() == "execute_reply" {
                        reply = Some(m.content);
                    }
                }
            }
            if readable[1] {
                // Drain everything queued: output floods arrive in bursts.
                while let Ok(frames) = self.iopub.recv_multipart(zmq::DONTWAIT) {
                    // Other clients' output is skipped before the costly verify-and-parse.
                    if !parent_mentions(&frames, &id) {
                        continue;
                    }
                    let Ok(m) = wire::decode(frames, &self.signer) else { continue };
                    if m.parent_msg_id() != id {
                        continue;
                    }
                    let c = &m.content;
                    match m.msg_type() {
                        "stream" => on_event(Event::Stream {
                            name: c["name"].as_str().unwrap_or("stdout"),
                            text: c["text"].as_str().unwrap_or(""),
                        }),
                        "execute_result" | "display_data" | "update_display_data" => {
                            on_event(Event::Display {
                                data: &c["data"],
                                execution_count: c["execution_count"].as_u64(),
                            })
                        }
                        "error" => on_event(Event::Error {
                            traceback: c["traceback"]
                                .as_array()
                                .map(|t| t.iter().filter_map(|l| l.as_str().map(String::from)).collect())
                                .unwrap_or_default(),
                        }),
                        "clear_output" => on_event(Event::ClearOutput),
                        "status" if c["execution_state"] == "idle" => idle = true,
                        _ => {}
                    }
                }
            }
            if readable[2] {
                if let Some(m) = self.recv(&self.stdin) {
                    let fresh = !asked.iter().any(|a| a == m.msg_id());
                    if m.msg_type() == "input_request" && m.parent_msg_id() == id && fresh {
                        asked.push(m.msg_id().to_string());
                        if opts.stdin == StdinMode::Lines {
                            let prompt = m.content["prompt"].as_str().unwrap_or("");
                            let password = m.content["password"].as_bool().unwrap_or(false);
                            let line = on_input(prompt, password);
                            match line {
                                Some(l) => self.answer_input(&m, &l),
                                None => {
                                    self.interrupt();
                                }
                            }
                        } else {
                            waiting_input = Some(m);
                        }
                    }
                }
            }
            let mut next = 3;
            if let Some(fd) = sigint {
                if readable[next] {
                    drain_fd(fd);
                    interrupts += 1;
                    if interrupts >= 3 {
                        return Err(ClientError::Other(
                            "interrupted (the kernel did not stop the code)".into(),
                        ));
                    }
                    self.interrupt();
                }
                next += 1;
            }
            if stdin_fd.is_some() && readable[next] {
                let chunk = self.read_stdin_chunk();
                if let Some(req) = waiting_input.take() {
                    self.answer_input(&req, &chunk);
                }
            }
        }
        Ok(ExecReply { content: reply.unwrap_or(Value::Null) })
    }

    fn answer_input(&self, request: &Message, value: &str) {
        let mut msg = wire::child(request, "input_reply", &self.session, json!({ "value": value }));
        msg.header = wire::header("input_reply", &self.session);
        let _ = self.stdin.send_multipart(wire::encode(&msg, &self.signer), 0);
    }

    /// Up to 64 KiB of what our stdin has now; "" at end of input.
    fn read_stdin_chunk(&mut self) -> String {
        let mut buf = vec![0u8; 64 << 10];
        let n = loop {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break 0,
            }
        };
        let mut bytes = std::mem::take(&mut self.stdin_carry);
        bytes.extend_from_slice(&buf[..n]);
        if n == 0 {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        // Keep an incomplete trailing character for the next chunk.
        let cut = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        self.stdin_carry = bytes.split_off(cut);
        if bytes.is_empty() {
            // A lone partial character: wait for its rest by sending a harmless empty-free chunk later.
            let more = self.read_stdin_chunk();
            return more;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Asks the kernel to shut down on control; true if it replied.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.control_request("shutdown_request", json!({ "restart": false }), timeout).is_ok()
    }
}

/// Whether the parent_header frame of a raw message contains `msg_id` (a cheap pre-filter; the
/// message is still verified and parsed before it is used).
fn parent_mentions(frames: &[Vec<u8>], msg_id: &str) -> bool {
    let Some(d) = frames.iter().position(|f| f == wire::DELIMITER) else { return false };
    let needle = msg_id.as_bytes();
    frames.get(d + 3).is_some_and(|parent| parent.windows(needle.len()).any(|w| w == needle))
}

fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a local buffer from a non-blocking pipe we own.
    unsafe {
        libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
    }
}

/// If `path` is one of our own connection files (kernels/<id>.json with its lock beside it), the
/// kernel's files, so liveness can be judged by the lock.
fn own_kernel_files(path: &Path) -> Option<KernelFiles> {
    let dir = path.parent()?;
    let id = path.file_name()?.to_str()?.strip_suffix(".json")?;
    let files = KernelFiles::new(dir, id);
    files.lock.exists().then_some(files)
}

/// The kernel with this id: connects to the live one, or starts one (detached) and connects.
/// Race-free: concurrent callers serialise on the spawn lock and all end up on one kernel.
pub fn find_or_spawn(id: &str, idle_timeout: u64) -> Result<Client, String> {
    connection::valid_id(id)?;
    let dir = connection::kernels_dir()?;
    let files = KernelFiles::new(&dir, id);
    if files.is_alive() {
        if let Ok(c) = Client::connect_file(&files.connection, Duration::from_secs(10)) {
            return Ok(c);
        }
    }
    let spawn_lock = connection::open_lock_file(&files.spawn_lock)
        .map_err(|e| format!("cannot open {}: {e}", files.spawn_lock.display()))?;
    spawn_lock.lock_exclusive().map_err(|e| format!("cannot lock {}: {e}", files.spawn_lock.display()))?;
    let result = (|| {
        if files.is_alive() {
            return Client::connect_file(&files.connection, Duration::from_secs(10));
        }
        if files.connection.exists() || files.lock.exists() {
            eprintln!(
                "llmspell: kernel {id:?} had stopped without cleaning up (crashed?); starting a new one"
            );
            files.remove_stale();
        }
        spawn_detached(&files, &["--idle-timeout".into(), idle_timeout.to_string()])?;
        Client::connect_file(&files.connection, Duration::from_secs(10))
    })();
    let _ = FileExt::unlock(&spawn_lock);
    result
}

/// Starts `llmspell kernel start --id ID` in its own session, stdio closed, logging to its log file,
/// and waits until its connection file appears. The caller holds the spawn lock.
pub fn spawn_detached(files: &KernelFiles, extra: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the llmspell binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["kernel", "start", "--id", &files.id, "--log-file"])
        .arg(&files.log)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the kernel from our terminal and its signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start a kernel: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if files.connection.exists() && files.is_alive() {
            // Reap the child later without blocking: it is its own session leader and lives on.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&files.log).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no log").to_string();
            return Err(format!("the kernel exited at start ({status}): {last}"));
        }
        if Instant::now() > deadline {
            return Err(format!("the kernel did not start within 10 s (see {})", files.log.display()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The connection file of a live kernel by id, if any.
pub fn live_connection(id: &str) -> Result<Option<PathBuf>, String> {
    let files = KernelFiles::new(&connection::kernels_dir()?, id);
    Ok(files.is_alive().then_some(files.connection))
}

/// Stops kernel `id`: shutdown request on control, then SIGTERM, then SIGKILL; removes its files.
pub fn stop_kernel(files: &KernelFiles) -> Result<bool, String> {
    if !files.is_alive() {
        let existed = files.connection.exists() || files.lock.exists();
        files.remove_stale();
        return Ok(existed);
    }
    let info = ConnectionInfo::read(&files.connection).ok();
    let pid = info.as_ref().and_then(|i| i.pid);
    if let Ok(c) = Client::connect_file(&files.connection, Duration::from_secs(2)) {
        c.shutdown(Duration::from_secs(2));
    }
    let gone = |limit: Duration| {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !files.is_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        !files.is_alive()
    };
    if !gone(Duration::from_secs(3)) {
        if let Some(pid) = pid {
            // SAFETY: plain kill(2) on the pid the live kernel wrote; the lock proves it still runs.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if !gone(Duration::from_secs(2)) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                gone(Duration::from_secs(2));
            }
        }
    }
    files.remove_stale();
    if files.is_alive() {
        return Err(format!("kernel {:?} did not stop", files.id));
    }
    Ok(true)
}

/// A socket that becomes readable on SIGINT, for `execute`'s poll (Ctrl-C interrupts the kernel
/// instead of killing the client).
pub fn sigint_pipe() -> Option<RawFd> {
    use std::os::unix::io::IntoRawFd;
    let (read, write) = std::os::unix::net::UnixStream::pair().ok()?;
    read.set_nonblocking(true).ok()?;
    write.set_nonblocking(true).ok()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write).ok()?;
    Some(read.into_raw_fd())
}

/// Flushes stdout and stderr, ignoring a closed pipe.
pub fn flush_std() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
