//! Hostile input, hostile user code, faults and load against a live kernel (issue 6).
//!
//! Every test starts its own kernel in a private home (`common::Home`) and talks to it either through
//! `llmspell::client::Client` or with raw ZeroMQ sockets and `llmspell::wire`, so it can send what no
//! well-behaved client would. Each test prints the figures it saw (`cargo test -- --nocapture`).
//!
//! One module per kind of fault: `bad_input` (malformed, replayed, oversized messages, garbage on
//! the ports, the wire fuzzer's regressions), `user_code` (what a cell can do to a shared kernel),
//! `input` (clients that vanish while their cell waits for input), `load` (16 clients at once),
//! `state_faults` (a state.json that cannot be written), `files` (file modes and addresses),
//! `iopub` (slow and stalled subscribers), `ownership` (each client owns its requests). The helpers
//! they share (`Kernel`, `Raw`, `run_cell`, ...) are here.

mod bad_input;
#[path = "../common/mod.rs"]
mod common;
mod files;
mod input;
mod iopub;
mod load;
mod ownership;
mod state_faults;
mod user_code;

use common::*;
use llmspell::client::{Client, Event, ExecOptions, StdinMode};
use llmspell::wire::{self, Message, Signer};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// A kernel started with `kernel start --daemon --id h EXTRA...` in its own home.
struct Kernel {
    home: Home,
}

impl Kernel {
    fn start(name: &str, extra: &[&str]) -> Kernel {
        let home = Home::new(name);
        let mut args = vec!["kernel", "start", "--daemon", "--id", "h"];
        args.extend_from_slice(extra);
        let out = home.cmd(&args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "kernel start failed: {}", stderr(&out));
        Kernel { home }
    }
    fn conn(&self) -> PathBuf {
        self.home.kernels_dir().join("h.json")
    }
    fn info(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.conn()).unwrap()).unwrap()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.home.kernels_dir().join("h.log")).unwrap_or_default()
    }
    fn pid(&self) -> i32 {
        self.home.kernel_pid("h").expect("the kernel wrote its pid")
    }
    fn client(&self) -> Client {
        Client::connect_file(&self.conn(), Duration::from_secs(10)).expect("connect to the kernel")
    }
    /// kernel_info's `llmspell.iopub` counters, asked on control.
    fn iopub_counts(&self) -> Value {
        let reply = self
            .client()
            .control_request("kernel_info_request", json!({}), Duration::from_secs(60))
            .expect("kernel_info on control");
        reply["llmspell"]["iopub"].clone()
    }
    fn raw(&self) -> Raw {
        Raw::new(&self.info(), "raw")
    }
    fn assert_alive(&self) {
        assert!(process_alive(self.pid()), "the kernel process died; log:\n{}", self.log());
    }
}

/// What one execute request produced.
#[derive(Debug, Default)]
struct Cell {
    reply: Value,
    out: String,
    err: String,
    traceback: Vec<String>,
    result: Option<String>,
}

impl Cell {
    fn status(&self) -> &str {
        self.reply["status"].as_str().unwrap_or("")
    }
    fn ename(&self) -> &str {
        self.reply["ename"].as_str().unwrap_or("")
    }
    fn evalue(&self) -> &str {
        self.reply["evalue"].as_str().unwrap_or("")
    }
}

fn run_cell(c: &mut Client, code: &str) -> Cell {
    let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::None };
    let mut cell = Cell::default();
    let reply = {
        let (out, err, tb, result) = (&mut cell.out, &mut cell.err, &mut cell.traceback, &mut cell.result);
        c.execute(
            code,
            &opts,
            None,
            &mut |ev| match ev {
                Event::Stream { name: "stderr", text } => err.push_str(text),
                Event::Stream { text, .. } => out.push_str(text),
                Event::Display { data, .. } => *result = data["text/plain"].as_str().map(String::from),
                Event::Error { traceback, .. } => tb.extend(traceback),
                Event::ClearOutput | Event::Waiting { .. } => {}
            },
            &mut |_, _| llmspell::client::LineAnswer::Interrupt,
        )
    };
    cell.reply = reply.unwrap_or_else(|e| panic!("execute {code:?} failed in the client: {e}")).content;
    cell
}

/// The value a cell shows, e.g. `"42"`.
fn value_of(c: &mut Client, expr: &str) -> String {
    let cell = run_cell(c, expr);
    assert_eq!(cell.status(), "ok", "{expr}: {:?}", cell.reply);
    cell.result.unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Chan {
    Shell,
    Control,
    Stdin,
}

impl Chan {
    fn name(self) -> &'static str {
        match self {
            Chan::Shell => "shell",
            Chan::Control => "control",
            Chan::Stdin => "stdin",
        }
    }
}

/// Raw DEALER sockets on shell, control and stdin (shell and stdin share an identity, as Jupyter
/// clients do), signing with the connection key.
struct Raw {
    _ctx: zmq::Context,
    shell: zmq::Socket,
    control: zmq::Socket,
    stdin: zmq::Socket,
    signer: Signer,
    session: String,
    counter: std::cell::Cell<u64>,
}

impl Raw {
    fn new(info: &Value, tag: &str) -> Raw {
        let ctx = zmq::Context::new();
        let session = format!("{tag}-{}", wire::random_hex(6));
        let ip = info["ip"].as_str().unwrap().to_string();
        let make = |port: &str| {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.set_linger(0).unwrap();
            s.set_rcvhwm(0).unwrap();
            s.set_identity(session.as_bytes()).unwrap();
            s.connect(&format!("tcp://{ip}:{}", info[port])).unwrap();
            s
        };
        let raw = Raw {
            shell: make("shell_port"),
            control: make("control_port"),
            stdin: make("stdin_port"),
            signer: Signer::new(info["key"].as_str().unwrap()),
            session: session.clone(),
            counter: std::cell::Cell::new(0),
            _ctx: ctx,
        };
        std::thread::sleep(Duration::from_millis(100)); // let the connections come up
        raw
    }

    fn socket(&self, chan: Chan) -> &zmq::Socket {
        match chan {
            Chan::Shell => &self.shell,
            Chan::Control => &self.control,
            Chan::Stdin => &self.stdin,
        }
    }

    fn new_id(&self) -> String {
        let n = self.counter.get();
        self.counter.set(n + 1);
        format!("{}-{n}", self.session)
    }

    fn header(&self, msg_type: &str) -> Value {
        let mut h = wire::header(msg_type, &self.session);
        h["msg_id"] = json!(self.new_id());
        h
    }

    /// A properly signed message of arbitrary JSON parts (any types at all).
    fn signed_parts(&self, header: &[u8], parent: &[u8], metadata: &[u8], content: &[u8]) -> Vec<Vec<u8>> {
        let sig = self.signer.sign(&[header, parent, metadata, content]);
        vec![
            wire::DELIMITER.to_vec(),
            sig.into_bytes(),
            header.to_vec(),
            parent.to_vec(),
            metadata.to_vec(),
            content.to_vec(),
        ]
    }

    fn signed_json(&self, header: &Value, parent: &Value, metadata: &Value, content: &Value) -> Vec<Vec<u8>> {
        let j = |v: &Value| serde_json::to_vec(v).unwrap();
        self.signed_parts(&j(header), &j(parent), &j(metadata), &j(content))
    }

    /// A valid request; returns its frames and msg_id.
    fn request(&self, msg_type: &str, content: Value) -> (Vec<Vec<u8>>, String) {
        self.request_with(msg_type, content, json!({}))
    }

    /// A valid request with metadata; returns its frames and msg_id.
    fn request_with(&self, msg_type: &str, content: Value, metadata: Value) -> (Vec<Vec<u8>>, String) {
        let h = self.header(msg_type);
        let id = h["msg_id"].as_str().unwrap().to_string();
        (self.signed_json(&h, &json!({}), &metadata, &content), id)
    }

    fn send(&self, chan: Chan, frames: Vec<Vec<u8>>) {
        self.socket(chan).send_multipart(frames, 0).unwrap();
    }

    /// Every message waiting on a socket, decoded (undecodable ones are a test failure).
    fn drain(&self, chan: Chan) -> Vec<Message> {
        let mut got = Vec::new();
        while let Ok(frames) = self.socket(chan).recv_multipart(zmq::DONTWAIT) {
            got.push(wire::decode(frames, &self.signer).expect("the kernel sends valid signed messages"));
        }
        got
    }

    /// Waits for the reply to `id` on `chan`; messages received meanwhile go to `seen`.
    fn wait_reply(
        &self,
        chan: Chan,
        id: &str,
        timeout: Duration,
        seen: &mut Vec<Message>,
    ) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            // The reply may have come in an earlier batch (a wait for another reply kept it).
            if let Some(i) = seen.iter().position(|m| m.parent_msg_id() == id) {
                return Some(seen.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if self.socket(chan).poll(zmq::POLLIN, left.as_millis().min(200) as i64).unwrap_or(0) > 0 {
                seen.extend(self.drain(chan));
            }
        }
    }
}

fn frames_len(frames: &[Vec<u8>]) -> usize {
    frames.iter().map(|f| f.len()).sum()
}

fn reply_type(req: &str) -> String {
    format!("{}_reply", req.strip_suffix("_request").unwrap_or(req))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The tests that flood iopub run one at a time: two floods beside each other on a 2-core machine
/// can starve a reading thread for longer than IOPUB_STALL_MS, and the kernel then rightly sets
/// that reader aside; what they test is the kernel, not this process's scheduling.
fn floods_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FLOODS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A generous deadline for anything that should happen (a loaded 2-core machine is slow).
const LONG: Duration = Duration::from_secs(60);

#[path = "../../fuzz/wire_check.rs"]
mod wire_check;
