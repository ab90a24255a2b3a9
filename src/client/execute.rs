//! `Client::execute`: one execute request, with its output, input requests and Ctrl-C, until the
//! kernel has replied and gone idle for it.

use super::{socket_error, Client, ClientError, Event, ExecOptions, ExecReply, LineAnswer, StdinMode};
use crate::wire::{self, Message};
use serde_json::{json, Value};
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

/// How long one poll waits; also how long a silent kernel goes before we check it is alive.
const POLL: Duration = Duration::from_millis(500);
/// After this many Ctrl-C the client gives up waiting for the kernel to stop the code.
pub(super) const MAX_INTERRUPTS: u32 = 3;
const STDIN_FD: RawFd = 0;
/// After this long without a sign that our request started, say what it waits for.
pub(super) const WAIT_NOTICE: Duration = Duration::from_secs(1);

/// What one execute request is waiting for, and what it has seen so far.
struct Pending {
    id: String,
    reply: Option<Value>,
    idle: bool,
    interrupts: u32,
    /// An input request waiting for our stdin (raw mode).
    waiting_input: Option<Message>,
    /// The kernel repeats an input request when it must check we are still here: answer once.
    asked: Vec<String>,
    /// The kernel has published something for our request: it has started.
    started: bool,
    /// Whether we have told the user we wait behind another client.
    said_waiting: bool,
}

impl Pending {
    fn done(&self) -> bool {
        self.reply.is_some() && self.idle
    }
}

/// Which of the loop's inputs have something for us.
#[derive(Default)]
struct Ready {
    shell: bool,
    iopub: bool,
    stdin: bool,
    /// The Ctrl-C pipe.
    sigint: bool,
    /// Our own stdin, polled only while a raw input request waits for it.
    terminal: bool,
}

impl Ready {
    fn any(&self) -> bool {
        self.shell || self.iopub || self.stdin || self.sigint || self.terminal
    }
}

/// What one iopub message of our request means.
pub(super) enum Published<'a> {
    Output(Event<'a>),
    Idle,
    Other,
}

pub(super) fn published(m: &Message) -> Published<'_> {
    let c = &m.content;
    match m.msg_type() {
        "stream" => Published::Output(Event::Stream {
            name: c["name"].as_str().unwrap_or("stdout"),
            text: c["text"].as_str().unwrap_or(""),
        }),
        "execute_result" | "display_data" | "update_display_data" => Published::Output(Event::Display {
            data: &c["data"],
            execution_count: c["execution_count"].as_u64(),
        }),
        "error" => Published::Output(Event::Error {
            ename: c["ename"].as_str().unwrap_or(""),
            traceback: c["traceback"]
                .as_array()
                .map(|t| t.iter().filter_map(|l| l.as_str().map(String::from)).collect())
                .unwrap_or_default(),
        }),
        "clear_output" => Published::Output(Event::ClearOutput),
        "status" if c["execution_state"] == "idle" => Published::Idle,
        _ => Published::Other,
    }
}

/// This process as the owner of its requests (see kernel/owner.rs): when it ends, its work ends.
fn owner() -> Value {
    static OWNER: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    OWNER.get_or_init(crate::request_owner::Owner::current).clone()
}

pub(super) fn request_content(code: &str, opts: &ExecOptions) -> (Value, Value) {
    let mut metadata = json!({ "llmspell": { "owner": owner() } });
    if opts.stdin == StdinMode::Raw {
        metadata["llmspell"]["stdin"] = json!("raw");
    }
    let content = json!({
        "code": code,
        "silent": opts.silent,
        "store_history": opts.store_history,
        "user_expressions": {},
        "allow_stdin": opts.stdin != StdinMode::None,
        "stop_on_error": false,
    });
    (content, metadata)
}

impl Client {
    /// Runs code, reporting output as it arrives, until the reply and the kernel's idle for it.
    /// `sigint` is a file descriptor that becomes readable on Ctrl-C; `on_input` answers line input.
    pub fn execute(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<ExecReply, ClientError> {
        let (content, metadata) = request_content(code, opts);
        let id = self.send(&self.shell, "execute_request", content, metadata);
        let mut p = Pending {
            id,
            reply: None,
            idle: false,
            interrupts: 0,
            waiting_input: None,
            asked: vec![],
            started: false,
            said_waiting: false,
        };
        let sent = Instant::now();
        let mut quiet_since = Instant::now();
        while !p.done() {
            if !p.started && !p.said_waiting && sent.elapsed() >= WAIT_NOTICE {
                p.said_waiting = true;
                if let Some(text) = self.waiting_behind() {
                    on_event(Event::Waiting { text });
                }
            }
            let raw_input = p.waiting_input.is_some() && opts.stdin == StdinMode::Raw;
            let Some(ready) = self.poll(sigint, raw_input.then_some(STDIN_FD))? else { continue };
            if !ready.any() {
                // Nothing for a while: make sure the kernel is still there.
                if quiet_since.elapsed() >= POLL && !self.alive() {
                    return Err(ClientError::KernelDied { running: true });
                }
                continue;
            }
            quiet_since = Instant::now();
            if ready.shell {
                self.take_reply(&mut p);
            }
            if ready.iopub {
                self.drain_iopub(&mut p, on_event);
            }
            if ready.stdin {
                self.take_input_request(&mut p, opts.stdin, on_input);
            }
            if let (true, Some(fd)) = (ready.sigint, sigint) {
                drain_fd(fd);
                p.interrupts += 1;
                // Ctrl-C touches our own request only: withdrawn if it has not started.
                if p.interrupts >= MAX_INTERRUPTS || self.interrupt_own(&p.id) {
                    return Err(ClientError::Interrupted);
                }
            }
            if ready.terminal {
                let chunk = self.stdin_chunks.next(&mut std::io::stdin().lock());
                if let Some(req) = p.waiting_input.take() {
                    self.answer_input(&req, &chunk, chunk.is_empty());
                }
            }
        }
        Ok(ExecReply { content: p.reply.unwrap_or(Value::Null) })
    }

    /// Waits up to [`POLL`] on the sockets, the Ctrl-C pipe and (if given) our stdin; `None` when a
    /// signal cut the wait short.
    fn poll(&self, sigint: Option<RawFd>, terminal: Option<RawFd>) -> Result<Option<Ready>, ClientError> {
        let mut items = vec![
            self.shell.as_poll_item(zmq::POLLIN),
            self.iopub.as_poll_item(zmq::POLLIN),
            self.stdin.as_poll_item(zmq::POLLIN),
        ];
        let mut add_fd = |fd: Option<RawFd>| {
            fd.map(|fd| {
                items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
                items.len() - 1
            })
        };
        let (sigint_at, terminal_at) = (add_fd(sigint), add_fd(terminal));
        match zmq::poll(&mut items, POLL.as_millis() as i64) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(None),
            Err(e) => return Err(socket_error(e)),
        }
        // A pipe whose writer has gone reports POLLHUP, which zmq::poll shows as an error: it
        // means "read now and see EOF", so it counts as readable.
        let ready = |at: Option<usize>| at.is_some_and(|i| items[i].is_readable() || items[i].is_error());
        Ok(Some(Ready {
            shell: ready(Some(0)),
            iopub: ready(Some(1)),
            stdin: ready(Some(2)),
            sigint: ready(sigint_at),
            terminal: ready(terminal_at),
        }))
    }

    fn take_reply(&self, p: &mut Pending) {
        if let Some(m) = self.recv(&self.shell) {
            if m.parent_msg_id() == p.id && m.msg_type() == "execute_reply" {
                p.reply = Some(m.content);
            }
        }
    }

    /// Reports everything queued on iopub for our request: output floods arrive in bursts.
    fn drain_iopub(&self, p: &mut Pending, on_event: &mut dyn FnMut(Event)) {
        while let Ok(frames) = self.iopub.recv_multipart(zmq::DONTWAIT) {
            // Other clients' output is skipped before the costly verify-and-parse.
            if !parent_mentions(&frames, &p.id) {
                continue;
            }
            let Ok(m) = wire::decode(frames, &self.signer) else { continue };
            if m.parent_msg_id() != p.id {
                continue;
            }
            p.started = true;
            match published(&m) {
                Published::Output(event) => on_event(event),
                Published::Idle => p.idle = true,
                Published::Other => {}
            }
        }
    }

    /// An input request of our request, seen for the first time: asked through `on_input` (lines;
    /// no line interrupts the code) or left waiting for our stdin (raw).
    fn take_input_request(
        &self,
        p: &mut Pending,
        mode: StdinMode,
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) {
        let Some(m) = self.recv(&self.stdin) else { return };
        let fresh = !p.asked.iter().any(|a| a == m.msg_id());
        if m.msg_type() != "input_request" || m.parent_msg_id() != p.id || !fresh {
            return;
        }
        p.asked.push(m.msg_id().to_string());
        if mode != StdinMode::Lines {
            p.waiting_input = Some(m);
            return;
        }
        let prompt = m.content["prompt"].as_str().unwrap_or("");
        let password = m.content["password"].as_bool().unwrap_or(false);
        match on_input(prompt, password) {
            LineAnswer::Line(line) => self.answer_input(&m, &line, false),
            LineAnswer::Eof => self.answer_input(&m, "", true),
            LineAnswer::Interrupt => self.interrupt(),
        }
    }
}

impl Client {
    /// What our queued request waits behind, from the kernel's own account (control answers at
    /// once): None if the kernel is not busy with someone else's request.
    fn waiting_behind(&self) -> Option<String> {
        let info = self.control_request("kernel_info_request", json!({}), Duration::from_secs(2)).ok()?;
        waiting_text(&info)
    }
}

/// The waiting notice from a kernel_info_reply's account of what the kernel runs: None if it is not
/// busy with a request (ours has not started, but nothing runs: it is about to).
pub(super) fn waiting_text(info: &Value) -> Option<String> {
    let running = &info["llmspell"]["running"];
    if info["llmspell"]["busy"] != true || running.is_null() {
        return None;
    }
    let whose = match running["client_pid"].as_u64() {
        Some(pid) => format!("another client's cell (pid {pid})"),
        None => "a cell of a Jupyter client".to_string(),
    };
    let since = running["seconds"].as_f64().unwrap_or(0.0);
    Some(format!("waiting: the kernel is running {whose}, started {since:.0} s ago; Ctrl-C to give up"))
}

/// Whether the parent_header frame of a raw message contains `msg_id` (a cheap pre-filter; the
/// message is still verified and parsed before it is used).
fn parent_mentions(frames: &[Vec<u8>], msg_id: &str) -> bool {
    let Some(d) = frames.iter().position(|f| f == wire::DELIMITER) else { return false };
    let needle = msg_id.as_bytes();
    frames.get(d + 3).is_some_and(|parent| parent.windows(needle.len()).any(|w| w == needle))
}

pub(super) fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a local buffer from a non-blocking pipe we own.
    unsafe {
        libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
    }
}
