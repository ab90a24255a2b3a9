//! `--remote URL`: the kernel runs under a Jupyter Server or Kernel Gateway. REST for the kernel's
//! life (`http`), one websocket for its channels (`websocket`), names remembered per server
//! (`names`); `run` is isolated on the kernel's side (`execute_with`). Everything is blocking: no async runtime.
//!
//! `RemoteClient` is the same `Session` the local `Client` is, so exec and repl do not care. What
//! differs: Ctrl-C goes to the server's interrupt endpoint, no owner is sent (our pid means nothing
//! on the kernel's host), and a dropped websocket is reopened with the same session id, for which
//! Jupyter Server has buffered the kernel's messages meanwhile.

pub mod http;
pub mod names;
pub mod websocket;

use super::execute::{
    drain_fd, published, request_content, waiting_text, Published, MAX_INTERRUPTS, WAIT_NOTICE,
};
use super::terminal::StdinChunks;
use super::{ClientError, Event, ExecOptions, ExecReply, LineAnswer, Session, StdinMode};
use crate::wire;
use http::Server;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use websocket::{Channels, Format, Frame, WsError};

/// What `--remote`, `--token`, `--cacert` and `--ws-format` said.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    pub url: String,
    pub token: Option<String>,
    pub cacert: Option<PathBuf>,
    /// None: v1 when the server offers it, else JSON.
    pub ws_format: Option<Format>,
    /// The server's kernelspec for new kernels (`LLMSPELL_KERNELSPEC`, default llmspell).
    pub kernelspec: String,
}

/// After this long without a message, ask the server whether the kernel is still there.
const QUIET_CHECK: Duration = Duration::from_secs(5);
/// How long a dropped websocket is retried before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

pub struct RemoteClient {
    pub server: Server,
    pub kernel_id: String,
    pub name: String,
    session: String,
    ws: RefCell<Channels>,
    stdin_chunks: StdinChunks,
}

/// What one execute request waits for (as the local loop's `Pending`).
struct Pending {
    id: String,
    reply: Option<Value>,
    idle: bool,
    interrupts: u32,
    waiting_input: Option<Frame>,
    asked: Vec<String>,
    /// The kernel has published something for our request: it has started.
    started: bool,
    /// The kernel_info_request asking what our request waits behind, once sent.
    asked_why: Option<String>,
}

impl RemoteClient {
    /// The kernel called `name` on the server, started if missing or gone, with its websocket open.
    pub fn connect(opts: &RemoteOptions, name: &str) -> Result<RemoteClient, ClientError> {
        let server = Server::new(opts)?;
        let (kernel_id, _) = names::find_or_start(&server, name)?;
        let session = wire::random_hex(16);
        let ws = Channels::open(&server, &kernel_id, &session, opts.ws_format)?;
        log::debug!("remote kernel {kernel_id}: websocket format {:?}", ws.format);
        Ok(RemoteClient {
            server,
            kernel_id,
            name: name.to_string(),
            session,
            ws: RefCell::new(ws),
            stdin_chunks: StdinChunks::default(),
        })
    }

    /// The websocket format in use (the test suite checks both).
    pub fn format(&self) -> Format {
        self.ws.borrow().format
    }

    fn frame(&self, channel: &str, msg_type: &str, content: Value, metadata: Value, parent: Value) -> Frame {
        Frame {
            channel: channel.into(),
            header: wire::header(msg_type, &self.session),
            parent_header: parent,
            metadata,
            content,
        }
    }

    fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        let sent = self.ws.borrow_mut().send(frame);
        if let Err(WsError::Dropped(why)) = sent {
            self.reconnect(&why)?;
            if let Err(WsError::Dropped(why)) = self.ws.borrow_mut().send(frame) {
                return Err(ClientError::Remote(format!(
                    "the websocket to {} dropped: {why}",
                    self.server.base
                )));
            }
        }
        Ok(())
    }

    /// The next message, None after the read timeout (or a reconnection).
    fn recv(&self) -> Result<Option<Frame>, ClientError> {
        let got = self.ws.borrow_mut().recv();
        match got {
            Ok(f) => Ok(f),
            Err(WsError::Dropped(why)) => self.reconnect(&why).map(|_| None),
        }
    }

    /// Reopens the websocket with the same session id: the server replays what it buffered.
    fn reconnect(&self, why: &str) -> Result<(), ClientError> {
        log::info!("websocket dropped ({why}); reconnecting");
        let format = self.ws.borrow().format;
        let until = Instant::now() + RECONNECT_FOR;
        let mut wait = Duration::from_millis(100);
        // Give the server a moment to see the old connection close: it starts buffering for our
        // session then, and replays the buffer when we come back. Coming back before that makes
        // it replace a connection it still thinks is open, and what it sent there is lost.
        std::thread::sleep(Duration::from_millis(300));
        loop {
            match Channels::open(&self.server, &self.kernel_id, &self.session, Some(format)) {
                Ok(ws) => {
                    *self.ws.borrow_mut() = ws;
                    return Ok(());
                }
                Err(e @ ClientError::KernelDied { .. }) => return Err(e),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => {}
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    fn alive(&self) -> bool {
        !matches!(self.server.kernel(&self.kernel_id), Ok(None))
    }

    /// Answers an input request; `eof` marks the end of input as llmspell's kernel reads it.
    fn answer_input(&self, request: &Frame, value: &str, eof: bool) -> Result<(), ClientError> {
        let content =
            if eof { json!({ "value": "", "llmspell": { "eof": true } }) } else { json!({ "value": value }) };
        let reply = self.frame("stdin", "input_reply", content, json!({}), request.header.clone());
        self.send(&reply)
    }

    /// Closes the websocket so the server keeps no buffer for this session.
    pub fn close(&self) {
        self.ws.borrow_mut().close();
    }
}

impl Drop for RemoteClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether `fd` can be read now (a zero-timeout poll).
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

impl Session for RemoteClient {
    fn request(&self, msg_type: &str, content: Value, timeout: Duration) -> Result<Value, ClientError> {
        let ask = self.frame("shell", msg_type, content, json!({}), json!({}));
        let id = ask.msg_id().to_string();
        self.send(&ask)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(f) = self.recv()? {
                if f.channel == "shell" && f.parent_msg_id() == id {
                    return Ok(f.content);
                }
            }
        }
        Err(ClientError::Timeout)
    }

    fn execute(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<ExecReply, ClientError> {
        self.execute_with(code, opts, None, sigint, on_event, on_input)
    }

    fn kernel_name(&self) -> String {
        self.name.clone()
    }

    fn describe(&self) -> String {
        let format = match self.format() {
            Format::V1 => websocket::V1,
            Format::Json => "json",
        };
        format!(
            "kernel {} remote id {} on {} (websocket {format})",
            self.name, self.kernel_id, self.server.base
        )
    }
}

impl RemoteClient {
    /// `execute`, with `run` as the request's `llmspell.run` metadata when given: an isolated run
    /// (see `commands::remote::run` and the kernel's `remote_run.rs`) instead of a cell.
    pub fn execute_with(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        run: Option<Value>,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<ExecReply, ClientError> {
        let (content, mut metadata) = request_content(code, opts);
        // The owner is a pid on this machine: meaningless (or someone else's) on the kernel's host.
        if let Some(m) = metadata["llmspell"].as_object_mut() {
            m.remove("owner");
            if let Some(run) = run {
                m.insert("run".into(), run);
            }
        }
        let ask = self.frame("shell", "execute_request", content, metadata, json!({}));
        let mut p = Pending {
            id: ask.msg_id().to_string(),
            reply: None,
            idle: false,
            interrupts: 0,
            waiting_input: None,
            asked: vec![],
            started: false,
            asked_why: None,
        };
        self.send(&ask)?;
        let sent = Instant::now();
        let mut quiet_since = Instant::now();
        while !(p.reply.is_some() && p.idle) {
            self.between_frames(&mut p, opts, sigint, sent)?;
            let Some(f) = self.recv()? else {
                if quiet_since.elapsed() >= QUIET_CHECK {
                    if !self.alive() {
                        return Err(ClientError::KernelDied { running: true });
                    }
                    quiet_since = Instant::now();
                }
                continue;
            };
            quiet_since = Instant::now();
            self.on_frame(f, &mut p, opts, on_event, on_input)?;
        }
        Ok(ExecReply { content: p.reply.unwrap_or(Value::Null) })
    }

    /// Between frames: the notice of a cell that waits, Ctrl-C (an interrupt over REST), and our
    /// stdin for an input request that waits for it.
    fn between_frames(
        &mut self,
        p: &mut Pending,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        sent: Instant,
    ) -> Result<(), ClientError> {
        // Not started after a while: ask the kernel (on control, answered at once) what it runs.
        if !p.started && p.asked_why.is_none() && sent.elapsed() >= WAIT_NOTICE {
            let why = self.frame("control", "kernel_info_request", json!({}), json!({}), json!({}));
            p.asked_why = Some(why.msg_id().to_string());
            self.send(&why)?;
        }
        if let Some(fd) = sigint.filter(|fd| readable(*fd)) {
            drain_fd(fd);
            p.interrupts += 1;
            if p.interrupts >= MAX_INTERRUPTS || !self.server.interrupt(&self.kernel_id)? {
                return Err(ClientError::Interrupted);
            }
        }
        if opts.stdin == StdinMode::Raw && p.waiting_input.is_some() && readable(0) {
            let chunk = self.stdin_chunks.next(&mut std::io::stdin().lock());
            if let Some(req) = p.waiting_input.take() {
                self.answer_input(&req, &chunk, chunk.is_empty())?;
            }
        }
        Ok(())
    }

    /// One frame of the websocket, for the request `p` is about.
    fn on_frame(
        &mut self,
        f: Frame,
        p: &mut Pending,
        opts: &ExecOptions,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<(), ClientError> {
        // The server's own word that the kernel died (and perhaps was restarted: our cell is lost).
        let state = &f.content["execution_state"];
        if f.channel == "iopub" && f.msg_type() == "status" && (state == "dead" || state == "restarting") {
            return Err(ClientError::KernelDied { running: true });
        }
        if f.channel == "control" && p.asked_why.as_deref() == Some(f.parent_msg_id()) {
            if let Some(text) = waiting_text(&f.content).filter(|_| !p.started) {
                on_event(Event::Waiting { text });
            }
            return Ok(());
        }
        if f.parent_msg_id() != p.id {
            return Ok(()); // the server's own requests, or other clients'
        }
        p.started = true;
        match f.channel.as_str() {
            "shell" if f.msg_type() == "execute_reply" => p.reply = Some(f.content),
            "iopub" => {
                let m = wire::Message {
                    header: f.header,
                    parent_header: f.parent_header,
                    content: f.content,
                    ..wire::Message::default()
                };
                match published(&m) {
                    Published::Output(event) => on_event(event),
                    Published::Idle => p.idle = true,
                    Published::Other => {}
                }
            }
            "stdin" if f.msg_type() == "input_request" && !p.asked.iter().any(|a| a == f.msg_id()) => {
                p.asked.push(f.msg_id().to_string());
                if opts.stdin != StdinMode::Lines {
                    p.waiting_input = Some(f);
                    return Ok(());
                }
                let prompt = f.content["prompt"].as_str().unwrap_or("");
                let password = f.content["password"].as_bool().unwrap_or(false);
                match on_input(prompt, password) {
                    LineAnswer::Line(line) => self.answer_input(&f, &line, false)?,
                    LineAnswer::Eof => self.answer_input(&f, "", true)?,
                    LineAnswer::Interrupt => {
                        self.server.interrupt(&self.kernel_id)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
