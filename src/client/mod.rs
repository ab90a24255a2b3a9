//! The ZeroMQ client behind `run`, `exec`, `repl` and kernel management: connects to a kernel through
//! its connection file and speaks the protocol with it. `execute` runs code with live output,
//! `lifecycle` finds, starts and stops our own kernels, `terminal` is the user's side (rendering
//! output, Ctrl-C, raw stdin).

mod execute;
pub mod lifecycle;
pub mod remote;
mod session;
pub mod terminal;
#[cfg(test)]
mod tests;

pub use lifecycle::{find_or_spawn, live_connection, spawn_detached, stop_kernel};
pub use session::Session;
pub use terminal::{sigint_pipe, Renderer, Results};

use crate::connection::{ConnectionInfo, KernelFiles};
use crate::wire::{self, Message, Signer};
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use terminal::StdinChunks;

/// Why a client call failed. `Display` is the one line the user sees; the caller picks the exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The connection file cannot be used (unreadable, writable by others, not valid).
    ConnectionFile(String),
    /// A ZeroMQ socket could not be made or connected, or polling failed.
    Socket(String),
    /// The kernel did not answer our first request within `waited`.
    NoAnswer { connection_file: PathBuf, waited: Duration },
    /// The kernel's process was gone before it answered.
    NotRunning { connection_file: PathBuf },
    /// A request got no reply in time.
    Timeout,
    /// The kernel died (or was shut down) while we waited; `running` while it ran our code.
    KernelDied { running: bool },
    /// Ctrl-C three times, and the kernel still did not stop the code.
    Interrupted,
    /// Finding, starting or stopping one of our own kernels failed.
    Lifecycle(String),
    /// A Jupyter Server / Kernel Gateway (`--remote`) refused or could not be reached.
    Remote(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ClientError::ConnectionFile(m)
            | ClientError::Socket(m)
            | ClientError::Lifecycle(m)
            | ClientError::Remote(m) => {
                write!(f, "{m}")
            }
            ClientError::NoAnswer { connection_file, waited } => write!(
                f,
                "the kernel of {} does not answer (waited {} ms)",
                connection_file.display(),
                waited.as_millis()
            ),
            ClientError::NotRunning { connection_file } => {
                write!(f, "the kernel of {} is not running", connection_file.display())
            }
            ClientError::Timeout => write!(f, "the kernel did not answer in time"),
            ClientError::KernelDied { running: false } => write!(f, "the kernel died"),
            ClientError::KernelDied { running: true } => write!(f, "the kernel died while running the code"),
            ClientError::Interrupted => write!(f, "interrupted (the kernel did not stop the code)"),
        }
    }
}

impl std::error::Error for ClientError {}

fn socket_error(e: zmq::Error) -> ClientError {
    ClientError::Socket(e.to_string())
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
    /// Our stdin, read in chunks for raw input replies.
    stdin_chunks: StdinChunks,
}

/// What `execute` reports as it goes.
#[derive(Debug, PartialEq)]
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
        ename: &'a str,
        traceback: Vec<String>,
    },
    ClearOutput,
    /// Our request has waited this long behind another client's request; the text says whose.
    Waiting {
        text: String,
    },
}

/// The user's answer to one line-mode input request.
#[derive(Debug, PartialEq)]
pub enum LineAnswer {
    Line(String),
    /// End of input (Ctrl-D, or the end of a piped stdin): `io.read` returns nil.
    Eof,
    /// No answer: interrupt the code (Ctrl-C at the prompt).
    Interrupt,
}

/// How stdin requests are answered.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum StdinMode {
    /// No input: io.read fails in the kernel.
    None,
    /// Raw chunks of our stdin, with EOF (run, exec).
    Raw,
    /// One line per request, asked by the given callback (the REPL).
    Lines,
}

pub struct ExecOptions {
    pub silent: bool,
    pub store_history: bool,
    pub stdin: StdinMode,
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
    /// Whether the kernel asked the front end to leave (the `ask_exit` payload of `exit`/`quit`).
    pub fn asks_exit(&self) -> bool {
        self.content["payload"].as_array().into_iter().flatten().any(|p| p["source"] == "ask_exit")
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
    pub fn connect_file(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let info = ConnectionInfo::read(path).map_err(ClientError::ConnectionFile)?;
        let liveness = match own_kernel_files(path) {
            Some(f) => Liveness::Lock(f),
            None => Liveness::Heartbeat,
        };
        let client = Client::open(info, path.to_path_buf(), liveness)?;
        client.handshake(timeout)?;
        Ok(client)
    }

    fn open(
        info: ConnectionInfo,
        connection_file: PathBuf,
        liveness: Liveness,
    ) -> Result<Client, ClientError> {
        let ctx = zmq::Context::new();
        let session = wire::random_hex(16);
        let make = |kind, port: u16| -> Result<zmq::Socket, ClientError> {
            let s = ctx.socket(kind).map_err(socket_error)?;
            s.set_linger(1000).map_err(socket_error)?;
            if kind == zmq::DEALER {
                // The kernel routes stdin requests to the identity of our shell socket.
                s.set_identity(session.as_bytes()).map_err(socket_error)?;
            }
            if kind == zmq::SUB {
                s.set_subscribe(b"").map_err(socket_error)?;
                s.set_rcvhwm(0).map_err(socket_error)?;
            }
            let endpoint = info.endpoint(port);
            s.connect(&endpoint)
                .map_err(|e| ClientError::Socket(format!("cannot connect to {endpoint}: {e}")))?;
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
            stdin_chunks: StdinChunks::default(),
        })
    }

    /// Waits until the kernel answers and our iopub subscription is live (an iopub message reached
    /// us), so no output of the first request can be missed. It asks on control, which a kernel
    /// answers even while another client's code runs: our request then simply queues on shell.
    fn handshake(&self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut replied = false;
        let mut subscribed = false;
        let mut pending = self.send(&self.control, "kernel_info_request", json!({}), json!({}));
        let mut last_nudge = Instant::now();
        while !(replied && subscribed) {
            let now = Instant::now();
            if now >= deadline {
                let connection_file = self.connection_file.clone();
                return Err(ClientError::NoAnswer { connection_file, waited: timeout });
            }
            if !self.alive() {
                return Err(ClientError::NotRunning { connection_file: self.connection_file.clone() });
            }
            let mut items = [self.control.as_poll_item(zmq::POLLIN), self.iopub.as_poll_item(zmq::POLLIN)];
            let wait = (deadline - now).min(Duration::from_millis(100));
            zmq::poll(&mut items, wait.as_millis() as i64).map_err(socket_error)?;
            let (control_ready, iopub_ready) = (items[0].is_readable(), items[1].is_readable());
            if control_ready {
                if let Some(m) = self.recv(&self.control) {
                    replied |= m.parent_msg_id() == pending;
                }
            }
            if iopub_ready && self.recv(&self.iopub).is_some() {
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
                return Err(ClientError::Timeout);
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
                        return Err(ClientError::KernelDied { running: false });
                    }
                }
            }
        }
    }

    /// Sends an interrupt request (control channel) without waiting for it.
    pub fn interrupt(&self) {
        self.send(&self.control, "interrupt_request", json!({}), json!({}));
    }

    /// Interrupts our own request `id` and nothing else: a kernel that knows ownership stops it
    /// if it runs, and withdraws it if it is still queued (it then never runs). True if withdrawn.
    pub fn interrupt_own(&self, id: &str) -> bool {
        let metadata = json!({ "llmspell": { "interrupt": id } });
        let sent = self.send(&self.control, "interrupt_request", json!({}), metadata);
        // Control answers at once, even while a cell runs.
        match self.wait_reply(&self.control, &sent, Duration::from_secs(5)) {
            Ok(reply) => reply["llmspell"]["withdrawn"] == true,
            Err(_) => false,
        }
    }

    /// Answers an input request; `eof` marks the end of input, an llmspell extension of the reply
    /// (other kernels see an empty line).
    fn answer_input(&self, request: &Message, value: &str, eof: bool) {
        let content =
            if eof { json!({ "value": "", "llmspell": { "eof": true } }) } else { json!({ "value": value }) };
        let mut msg = wire::child(request, "input_reply", &self.session, content);
        msg.header = wire::header("input_reply", &self.session);
        let _ = self.stdin.send_multipart(wire::encode(&msg, &self.signer), 0);
    }

    /// Asks the kernel to shut down on control; true if it replied.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.control_request("shutdown_request", json!({ "restart": false }), timeout).is_ok()
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
