//! Hostile input, hostile user code, faults and load against a live kernel (issue 6).
//!
//! Every test starts its own kernel in a private home (`common::Home`) and talks to it either through
//! `llmspell::client::Client` or with raw ZeroMQ sockets and `llmspell::wire`, so it can send what no
//! well-behaved client would. Each test prints the figures it saw (`cargo test -- --nocapture`).

mod common;

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
                Event::Error { traceback } => tb.extend(traceback),
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

// ------------------------------------------------------------------------------------------------
// Hostile and broken input
// ------------------------------------------------------------------------------------------------

/// What a malformed message should be logged as, by its kind.
const LOG_NO_DELIMITER: &str = "dropped a message: no <IDS|MSG> delimiter";
const LOG_FRAMES: &str = "frames after the delimiter, need at least 5";
const LOG_SIGNATURE: &str = "dropped a message: bad or missing HMAC signature";
const LOG_JSON: &str = "is not a JSON object";
const LOG_FIELD: &str = "dropped a message: header lacks a string";
const LOG_TOO_BIG: &str = "dropped a message of more than 1048576 bytes";

/// Well-signed requests whose JSON has the wrong type in every field a kernel reads. The kernel must
/// answer each `*_request` with its reply (and keep serving); other types it ignores.
fn odd_but_signed(raw: &Raw, chan: Chan) -> Vec<(Vec<Vec<u8>>, String, String)> {
    let mut specs: Vec<(Value, Value, Value, Value)> = Vec::new();
    let mut add = |msg_type: &str, metadata: Value, content: Value| {
        specs.push((raw.header(msg_type), json!({}), metadata, content));
    };
    match chan {
        Chan::Shell => {
            for content in [
                json!({"code": 5}),
                json!({"code": null}),
                json!({"code": []}),
                json!({"code": {"a": 1}}),
                json!({"code": "1", "silent": "yes", "store_history": 3, "allow_stdin": "x", "stop_on_error": "x"}),
                json!({"code": "1", "user_expressions": []}),
                json!({"code": "1", "user_expressions": {"a": 5, "b": null, "c": "1 +", "d": "os.exit(1)", "e": "error({})"}}),
                json!({"code": "1", "user_expressions": "x"}),
                json!({"code": "error('planned')", "stop_on_error": "no"}),
                json!({}),
            ] {
                add("execute_request", json!({}), content);
            }
            for metadata in [
                json!({"llmspell": 5}),
                json!({"llmspell": {"stdin": 7, "run": 5}}),
                json!({"llmspell": {"run": {"name": 5, "args": 5}}}),
                json!({"llmspell": {"run": {"name": [], "args": [1, {}, null, "ok"]}}}),
                json!({"llmspell": {"run": "x"}}),
            ] {
                add("execute_request", metadata, json!({"code": "return 1"}));
            }
            for content in [
                json!({"code": 5, "cursor_pos": "x"}),
                json!({"code": "string.", "cursor_pos": -1}),
                json!({"code": "string.", "cursor_pos": 1e300}),
                json!({"code": "string.", "cursor_pos": 18446744073709551615u64}),
                // (inspect_request with "é = stri" at 1 kills the Lua thread: see
                // inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive)
                json!({"code": "é = stri", "cursor_pos": 3}),
                json!({"code": "ééé", "cursor_pos": 2}),
                json!({"code": [], "cursor_pos": []}),
                json!({}),
            ] {
                add("complete_request", json!({}), content.clone());
                if content["code"].as_str().is_some_and(|c| !c.is_ascii()) {
                    continue; // inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive
                }
                let mut c = content;
                c["detail_level"] = json!("x");
                add("inspect_request", json!({}), c);
            }
            for content in [json!({"code": 5}), json!({"code": "if x then"}), json!({})] {
                add("is_complete_request", json!({}), content);
            }
            for content in [
                json!({"hist_access_type": 5}),
                json!({"hist_access_type": "range", "start": "x", "stop": -5, "output": "x", "raw": []}),
                json!({"hist_access_type": "range", "start": 18446744073709551615u64, "stop": 0}),
                json!({"hist_access_type": "tail", "n": "x"}),
                json!({"hist_access_type": "tail", "n": 1e20}),
                json!({"hist_access_type": "tail", "n": 18446744073709551615u64}),
                json!({"hist_access_type": "search", "pattern": 5, "unique": "x", "n": -1}),
                json!({"hist_access_type": "search", "pattern": "*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?b"}),
                json!({"hist_access_type": []}),
            ] {
                add("history_request", json!({}), content);
            }
            add("comm_info_request", json!({}), json!({"target_name": 5}));
            add("comm_open", json!({}), json!({"comm_id": [], "target_name": 5, "data": 5}));
            add("comm_msg", json!({}), json!({"comm_id": {}, "data": "x"}));
            add("comm_close", json!({}), json!({"comm_id": 5}));
            add("kernel_info_request", json!({"x": [1, 2]}), json!({"unexpected": true}));
            add("interrupt_request", json!({}), json!({}));
        }
        Chan::Control => {
            add("kernel_info_request", json!({}), json!({"x": 1}));
            add("interrupt_request", json!({}), json!({"restart": "x"}));
            add("debug_request", json!({}), json!({"command": 5}));
        }
        Chan::Stdin => {
            add("input_reply", json!({}), json!({"value": 5}));
            add("input_reply", json!({}), json!({}));
            add("execute_request", json!({}), json!({"code": "x = 1"}));
        }
    }
    // Wrong types in the header's other fields, and in the parent header.
    let odd_headers = [
        json!({"session": 5, "username": [], "date": {}, "version": 5}),
        json!({"session": null, "date": "not a date", "version": "99.0"}),
    ];
    let base_type = match chan {
        Chan::Shell | Chan::Control => "kernel_info_request",
        Chan::Stdin => "input_reply",
    };
    for odd in odd_headers {
        let mut h = raw.header(base_type);
        for (k, v) in odd.as_object().unwrap() {
            h[k] = v.clone();
        }
        specs.push((h, json!({"msg_id": 5, "msg_type": [], "header": "x"}), json!({}), json!({})));
    }
    specs
        .into_iter()
        .map(|(h, p, m, c)| {
            let id = h["msg_id"].as_str().unwrap().to_string();
            let t = h["msg_type"].as_str().unwrap().to_string();
            (raw.signed_json(&h, &p, &m, &c), id, t)
        })
        .collect()
}

/// One malformed message of kind `kind` for `chan`, and the log text it must produce.
fn malformed(raw: &Raw, rng: &mut Rng, kind: usize) -> (Vec<Vec<u8>>, &'static str) {
    let (good, _) = raw.request("kernel_info_request", json!({}));
    match kind {
        // No delimiter at all: random frames (never exactly "<IDS|MSG>"), or a near miss.
        0 => {
            let n = 1 + rng.below(8);
            let mut frames: Vec<Vec<u8>> = (0..n).map(|_| rng.some(64)).collect();
            if rng.below(3) == 0 {
                frames[0] = b"<IDS|MSG".to_vec();
            }
            if rng.below(3) == 0 {
                frames = good[1..].to_vec(); // a valid message with the delimiter left out
            }
            (frames, LOG_NO_DELIMITER)
        }
        // Too few frames after the delimiter.
        1 => {
            let keep = 1 + rng.below(5); // the delimiter and 0..=4 of the 5 frames
            (good[..keep].to_vec(), LOG_FRAMES)
        }
        // Bad or missing signatures.
        2 => {
            let mut f = good.clone();
            let sig = f[1].clone();
            f[1] = match rng.below(7) {
                0 => Vec::new(),
                1 => rng.bytes(64),
                2 => b"zz".repeat(32),
                3 => sig[..sig.len() - 1].to_vec(),
                4 => [&sig[..], b"00"].concat(),
                5 => wire::random_hex(32).into_bytes(),
                _ => {
                    // The right signature for a different content.
                    f[5] = br#"{"code":"os.exit()"}"#.to_vec();
                    sig
                }
            };
            (f, LOG_SIGNATURE)
        }
        // Truncated or non-UTF-8 JSON, and JSON that is not an object, correctly signed.
        3 => {
            let h = serde_json::to_vec(&raw.header("execute_request")).unwrap();
            let parts: [Vec<u8>; 4] = [h, b"{}".to_vec(), b"{}".to_vec(), br#"{"code":"1"}"#.to_vec()];
            let which = rng.below(4);
            let mut parts = parts;
            parts[which] = match rng.below(6) {
                0 => {
                    let p = &parts[which];
                    p[..rng.below(p.len())].to_vec()
                }
                1 => b"\xff\xfe\xfd{}".to_vec(),
                2 => b"{\"msg_id\": \"\xc3\x28\"}".to_vec(),
                3 => b"[1, 2, 3]".to_vec(),
                4 => b"5".to_vec(),
                _ => b"null".to_vec(),
            };
            (raw.signed_parts(&parts[0], &parts[1], &parts[2], &parts[3]), LOG_JSON)
        }
        // A header without string msg_id / msg_type, correctly signed.
        _ => {
            let mut h = raw.header("execute_request");
            let bad = [json!([]), json!(5), json!(null), json!({}), json!(true)];
            match rng.below(3) {
                0 => h["msg_type"] = rng.pick(&bad).clone(),
                1 => h["msg_id"] = rng.pick(&bad).clone(),
                _ => {
                    h.as_object_mut().unwrap().remove(if rng.below(2) == 0 { "msg_id" } else { "msg_type" });
                }
            }
            (raw.signed_json(&h, &json!({}), &json!({}), &json!({"code": "1"})), LOG_FIELD)
        }
    }
}

#[test]
fn malformed_messages_on_every_channel_are_dropped_and_logged() {
    let k = Kernel::start("malformed", &["--max-message-mb", "1"]);
    let raw = k.raw();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let chans = [Chan::Shell, Chan::Control, Chan::Stdin];
    let mut sent_malformed: HashMap<(Chan, &'static str), usize> = HashMap::new();
    let mut expected_replies: HashMap<String, (Chan, String)> = HashMap::new();
    let mut received: Vec<(Chan, Message)> = Vec::new();
    let mut odd_sent = 0;
    let rounds = 250;
    for round in 0..rounds {
        for &chan in &chans {
            for kind in 0..5 {
                let (frames, label) = malformed(&raw, &mut rng, kind);
                raw.send(chan, frames);
                *sent_malformed.entry((chan, label)).or_default() += 1;
            }
            // Every tenth round: the well-signed requests with wrong types, unknown types, and
            // oversized messages.
            if round % 10 == 0 {
                for (frames, id, t) in odd_but_signed(&raw, chan) {
                    raw.send(chan, frames);
                    odd_sent += 1;
                    let replies = t.ends_with("_request") && chan != Chan::Stdin;
                    if replies {
                        expected_replies.insert(id, (chan, reply_type(&t)));
                    }
                }
                for t in ["foo_request", "foo", "", "_request", "execute_reply", "status", "ñ_request"] {
                    let (frames, id) = raw.request(t, json!({}));
                    raw.send(chan, frames);
                    odd_sent += 1;
                    if t.ends_with("_request") && chan != Chan::Stdin {
                        expected_replies.insert(id, (chan, reply_type(t)));
                    }
                }
                // A frame bigger than --max-message-mb 1, and many small frames adding up to more.
                let (mut frames, _) = raw.request("execute_request", json!({"code": "huge = true"}));
                if round % 20 == 0 {
                    frames.push(vec![b'x'; 2 << 20]);
                } else {
                    frames.extend((0..3000).map(|_| vec![b'y'; 400]));
                }
                assert!(frames_len(&frames) > 1 << 20);
                raw.send(chan, frames);
                *sent_malformed.entry((chan, LOG_TOO_BIG)).or_default() += 1;
            }
        }
        for &chan in &chans {
            received.extend(raw.drain(chan).into_iter().map(|m| (chan, m)));
        }
    }
    // Sentinels: once their replies are back, everything sent before them on that channel was read.
    for chan in [Chan::Shell, Chan::Control] {
        let (frames, id) = raw.request("kernel_info_request", json!({}));
        raw.send(chan, frames);
        let mut seen = Vec::new();
        let reply = raw.wait_reply(chan, &id, Duration::from_secs(60), &mut seen);
        received.extend(seen.into_iter().map(|m| (chan, m)));
        assert!(
            reply.is_some(),
            "no reply on {} after the flood; log tail:\n{}",
            chan.name(),
            tail(&k.log(), 30)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for &chan in &chans {
        received.extend(raw.drain(chan).into_iter().map(|m| (chan, m)));
    }

    // Every well-signed request got exactly one reply, of the right type, on its own channel; the
    // unknown ones an error reply.
    let mut replies_by_parent: HashMap<String, Vec<(Chan, String, Value)>> = HashMap::new();
    for (chan, m) in &received {
        replies_by_parent.entry(m.parent_msg_id().to_string()).or_default().push((
            *chan,
            m.msg_type().to_string(),
            m.content.clone(),
        ));
    }
    let mut missing = Vec::new();
    for (id, (chan, rtype)) in &expected_replies {
        match replies_by_parent.get(id).map(|v| v.as_slice()) {
            Some([(c, t, content)]) => {
                assert_eq!((c, t.as_str()), (chan, rtype.as_str()), "reply to {id}");
                if rtype == "foo_reply" || rtype == "ñ_reply" || rtype == "_reply" {
                    assert_eq!(content["status"], "error", "{rtype}: {content}");
                }
                // The debugger answers a DAP response: a bad request is one that did not succeed.
                if rtype == "debug_reply" {
                    assert_eq!(content["success"], false, "{rtype}: {content}");
                }
            }
            other => missing.push(format!("{id} ({rtype} on {}): {other:?}", chan.name())),
        }
    }
    let total_malformed: usize = sent_malformed.values().sum();
    println!(
        "sent {total_malformed} malformed messages and {odd_sent} well-signed odd ones; {} replies expected, {} received",
        expected_replies.len(),
        received.len()
    );
    assert!(
        missing.is_empty(),
        "{} requests got no single reply: {:#?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(total_malformed >= 3000, "{total_malformed}");

    // The kernel still serves a normal client correctly.
    k.assert_alive();
    let mut c = k.client();
    assert_eq!(value_of(&mut c, "1 + 1"), "2");
    assert_eq!(value_of(&mut c, "huge"), "nil", "an oversized message must not have run");

    // The log names every kind of drop, on every channel.
    let log = k.log();
    let mut counts = Vec::new();
    for ((chan, label), n) in &sent_malformed {
        let needle = format!("{}: ", chan.name());
        let logged = log.lines().filter(|l| l.contains(&needle) && l.contains(label)).count();
        counts.push(format!("{:7} {label:?}: sent {n}, logged {logged}", chan.name()));
        assert!(logged >= *n, "{} {label:?}: sent {n}, logged {logged}", chan.name());
    }
    counts.sort();
    println!("{}", counts.join("\n"));
    assert!(log.contains("ignored a \"foo\" message"), "{}", tail(&log, 20));
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn a_replayed_signed_message_is_dropped() {
    let k = Kernel::start("replay", &[]);
    let raw = k.raw();
    let (frames, id) = raw.request("execute_request", json!({"code": "x = (x or 0) + 1", "silent": false}));
    raw.send(Chan::Shell, frames.clone());
    let mut seen = Vec::new();
    let first = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(10), &mut seen).expect("a reply");
    assert_eq!(first.content["status"], "ok");
    raw.send(Chan::Shell, frames.clone()); // identical frames, identical signature
                                           // And the same on control: a replayed kernel_info_request gets no second reply.
    let (kframes, kid) = raw.request("kernel_info_request", json!({}));
    raw.send(Chan::Control, kframes.clone());
    raw.send(Chan::Control, kframes);
    let mut seen = Vec::new();
    assert!(raw.wait_reply(Chan::Control, &kid, Duration::from_secs(10), &mut seen).is_some());
    let mut c = k.client();
    let x = value_of(&mut c, "x"); // served after the replay, which was queued before it
    std::thread::sleep(Duration::from_millis(300));
    let control_replies = 1 + raw.drain(Chan::Control).iter().filter(|m| m.parent_msg_id() == kid).count();
    let shell_replies = raw.drain(Chan::Shell).iter().filter(|m| m.parent_msg_id() == id).count();
    println!("x = {x}; second shell replies: {shell_replies}; control replies: {control_replies}");
    assert_eq!(x, "1", "the replayed execute_request ran again");
    assert_eq!(shell_replies, 0);
    assert_eq!(control_replies, 1);
    let log = k.log();
    assert!(log.contains("shell: dropped a replayed message (execute_request)"), "{log}");
    assert!(log.contains("control: dropped a replayed message (kernel_info_request)"), "{log}");
}

#[test]
fn unknown_request_types_get_an_error_reply() {
    let k = Kernel::start("unknown", &[]);
    let raw = k.raw();
    for chan in [Chan::Shell, Chan::Control] {
        let (frames, id) = raw.request("foo_request", json!({"a": 1}));
        raw.send(chan, frames);
        let mut seen = Vec::new();
        let r = raw.wait_reply(chan, &id, Duration::from_secs(10), &mut seen).expect("a foo_reply");
        println!("{}: {} {}", chan.name(), r.msg_type(), r.content);
        assert_eq!(r.msg_type(), "foo_reply");
        assert_eq!(r.content["status"], "error");
        assert!(r.content["evalue"].as_str().unwrap().contains("foo_request"), "{}", r.content);
    }
    let mut c = k.client();
    let r = c.request("bar_request", json!({}), Duration::from_secs(10)).unwrap();
    assert_eq!(r["status"], "error");
    assert_eq!(value_of(&mut c, "'still' .. ' here'"), "\"still here\"");
}

#[test]
fn a_message_just_under_the_size_limit_is_served() {
    let k = Kernel::start("size", &["--max-message-mb", "1"]);
    let mut c = k.client();
    let code = format!("s = '{}' return #s", "z".repeat(900 * 1024));
    assert_eq!(value_of(&mut c, &code), (900 * 1024).to_string());
    let code = format!("s = '{}' return #s", "z".repeat(1100 * 1024));
    // Over the limit: dropped, so no reply ever comes. Send it raw and check the log.
    let raw = k.raw();
    let (frames, _) = raw.request("execute_request", json!({ "code": code }));
    raw.send(Chan::Shell, frames);
    assert!(wait_until(Duration::from_secs(5), || k.log().contains(LOG_TOO_BIG)), "{}", k.log());
    assert_eq!(value_of(&mut c, "#s"), (900 * 1024).to_string());
}

#[test]
fn garbage_on_heartbeat_iopub_and_raw_tcp_is_harmless() {
    let k = Kernel::start("garbage", &[]);
    let info = k.info();
    let ip = info["ip"].as_str().unwrap();
    let mut rng = Rng(0xdead_beef_0042);
    let ctx = zmq::Context::new();
    // A fresh REQ per try, so one lost echo cannot wedge the next. Echoes lost to the libzmq REP
    // quirk (see a_broken_peer_on_the_heartbeat_port_costs_no_echo) are counted, not failures; a
    // heartbeat that stays silent is.
    let lost = std::cell::Cell::new(0);
    let hb_answers = |phase: &str| {
        for _ in 0..3 {
            let s = ctx.socket(zmq::REQ).unwrap();
            s.set_linger(0).unwrap();
            s.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
            s.send(phase, 0).unwrap();
            if s.poll(zmq::POLLIN, 2000).unwrap() > 0 && s.recv_bytes(0).unwrap() == phase.as_bytes() {
                return;
            }
            lost.set(lost.get() + 1);
        }
        panic!("the heartbeat stopped answering after {phase}; log:\n{}", tail(&k.log(), 10));
    };
    // Heartbeat: garbage is echoed, as heartbeats are; a DEALER without the REQ envelope is ignored.
    let hb = ctx.socket(zmq::REQ).unwrap();
    hb.set_linger(0).unwrap();
    hb.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
    for i in 0..500 {
        let data = rng.some(4096);
        hb.send(&data, 0).unwrap();
        assert!(hb.poll(zmq::POLLIN, 5000).unwrap() > 0, "heartbeat {i} not echoed");
        assert_eq!(hb.recv_bytes(0).unwrap(), data);
    }
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
    for _ in 0..500 {
        let frames: Vec<Vec<u8>> = (0..1 + rng.below(4)).map(|_| rng.some(100)).collect();
        dealer.send_multipart(frames, 0).unwrap();
    }
    hb_answers("envelope-less DEALER messages");
    // iopub: an XSUB may send anything upstream: odd (un)subscriptions, empty and huge messages.
    let xsub = ctx.socket(zmq::XSUB).unwrap();
    xsub.set_linger(0).unwrap();
    xsub.connect(&format!("tcp://{ip}:{}", info["iopub_port"])).unwrap();
    for i in 0..2000 {
        let msg: Vec<u8> = match i % 6 {
            0 => Vec::new(),
            1 => vec![1],
            2 => [&[1u8][..], &rng.some(200)].concat(),
            3 => [&[0u8][..], &rng.some(200)].concat(),
            4 => [&[2u8][..], &rng.some(200)].concat(),
            _ => [&[1u8][..], &vec![b't'; 100_000][..]].concat(),
        };
        xsub.send(msg, 0).unwrap();
    }
    hb_answers("XSUB garbage on iopub");
    // Raw TCP: random bytes, and a ZMTP greeting followed by garbage, on every port.
    let mut raw_conns = 0;
    for port in ["shell_port", "control_port", "stdin_port", "iopub_port", "hb_port"] {
        for i in 0..20 {
            let addr = format!("{ip}:{}", info[port]);
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                raw_conns += 1;
                let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                let mut data = if i % 2 == 0 {
                    b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00NULL".to_vec()
                } else {
                    Vec::new()
                };
                data.extend(rng.some(20_000));
                let _ = s.write_all(&data);
                let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
                let _ = s.read(&mut [0u8; 64]);
            }
        }
        hb_answers(&format!("raw TCP garbage on {port}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    k.assert_alive();
    hb_answers("the end");
    let mut c = k.client(); // the handshake needs control and iopub to work
    assert_eq!(value_of(&mut c, "print('out') return 6 * 7"), "42");
    let cell = run_cell(&mut c, "print('visible')");
    assert_eq!(cell.out, "visible\n");
    println!(
        "1000 heartbeat garbage messages, 2000 XSUB messages, {raw_conns} raw TCP connections: kernel serves; \
         heartbeat echoes lost on the way: {}",
        lost.get()
    );
}

/// A ZMTP/1.0 peer (no 0xFF greeting) that sends an empty identity, a two-frame message with no REQ
/// envelope, then a frame header claiming 3.6e18 bytes, and hangs up. Found by the random TCP
/// garbage above (2250 bytes, minimised to these 148).
fn zmtp1_broken_peer() -> Vec<u8> {
    let mut d = vec![0x01, 0x00];
    d.extend([110, 0x01]);
    d.extend([b'a'; 109]);
    d.extend([24, 0x00]);
    d.extend([b'b'; 23]);
    d.push(0xff);
    d.extend(3_683_973_964_138_117_104u64.to_be_bytes());
    d.push(0);
    d
}

#[test]
fn a_broken_peer_on_the_heartbeat_port_costs_no_echo() {
    let k = Kernel::start("hbwedge", &[]);
    let info = k.info();
    let ctx = zmq::Context::new();
    let mut answered = Vec::new();
    {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{}", info["hb_port"])).unwrap();
        s.write_all(&zmtp1_broken_peer()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        let s = ctx.socket(zmq::REQ).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&format!("tcp://127.0.0.1:{}", info["hb_port"])).unwrap();
        s.send(format!("ping{i}").as_str(), 0).unwrap();
        answered.push(s.poll(zmq::POLLIN, 1000).unwrap() > 0);
    }
    println!("heartbeat pings answered after the broken peer: {answered:?}");
    assert_eq!(answered, [true, true, true]);
}

#[test]
fn inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive() {
    let k = Kernel::start("inspect", &[]);
    let raw = k.raw();
    let (frames, id) =
        raw.request("inspect_request", json!({"code": "é = stri", "cursor_pos": 1, "detail_level": 0}));
    raw.send(Chan::Shell, frames);
    let mut seen = Vec::new();
    let reply = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(5), &mut seen);
    println!(
        "inspect_request {{code: \"é = stri\", cursor_pos: 1}}: reply {:?}",
        reply.as_ref().map(|m| &m.content)
    );
    let (frames, id) = raw.request("execute_request", json!({"code": "1 + 1"}));
    raw.send(Chan::Shell, frames);
    let after = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(5), &mut seen);
    println!("execute_request after it: reply {:?}", after.as_ref().map(|m| &m.content));
    assert!(reply.is_some(), "no inspect_reply");
    assert!(after.is_some(), "the shell no longer answers");
}

#[test]
fn one_clients_failed_cell_does_not_abort_another_clients_queued_request() {
    let k = Kernel::start("abort", &[]);
    let raw = k.raw(); // a notebook-like client: stop_on_error true
    let (frames, _) = raw.request(
        "execute_request",
        json!({"code": "local t = os.clock() while os.clock() - t < 1 do end error('mine')", "stop_on_error": true}),
    );
    raw.send(Chan::Shell, frames);
    std::thread::sleep(Duration::from_millis(300));
    let mut other = k.client(); // queued behind it, from another client
    let cell = run_cell(&mut other, "'other client'");
    println!("another client's request queued behind a failing cell: {:?}", cell.reply);
    assert_eq!(cell.status(), "ok");
}

// ------------------------------------------------------------------------------------------------
// What user code can do to a shared kernel
// ------------------------------------------------------------------------------------------------

/// Runs an attack cell on `attacker`, then checks the victim's globals and a normal cell.
fn after_attack(victim: &mut Client, attacker: &mut Client, what: &str) {
    assert_eq!(value_of(victim, "victim_data"), "\"precious\"", "after {what}");
    assert_eq!(value_of(attacker, "2 + 2"), "4", "after {what}");
}

#[test]
fn user_code_attacks_fail_in_their_cell_and_the_kernel_keeps_serving() {
    let k = Kernel::start("attacks", &["--memory-limit", "64"]);
    let mut victim = k.client();
    let mut attacker = k.client();
    assert_eq!(run_cell(&mut victim, "victim_data = 'precious'").status(), "ok");

    // Infinite recursion: fails with a clear error (a stack overflow, or the memory limit first).
    let t = Instant::now();
    let cell = run_cell(&mut attacker, "local function f() return 1 + f() end return f()");
    println!("recursion: {} {:?} in {:?}", cell.ename(), cell.evalue(), t.elapsed());
    assert_eq!(cell.status(), "error");
    assert!(
        cell.evalue().contains("stack overflow")
            || cell.ename() == "MemoryError"
            || cell.evalue().contains("memory"),
        "{:?}",
        cell.reply
    );
    after_attack(&mut victim, &mut attacker, "recursion");

    // error() with a table and with nil.
    let cell = run_cell(&mut attacker, "error({code = 7, why = 'table'})");
    println!("error(table): {} {:?}", cell.ename(), cell.evalue());
    assert_eq!(cell.status(), "error");
    assert!(cell.evalue().contains("code = 7") && cell.evalue().contains("table"), "{:?}", cell.reply);
    let cell = run_cell(&mut attacker, "error(nil)");
    println!("error(nil): {} {:?} {:?}", cell.ename(), cell.evalue(), cell.traceback);
    assert_eq!(cell.status(), "error");
    assert!(cell.evalue().contains("nil"), "{:?}", cell.reply);
    let cell =
        run_cell(&mut attacker, "error(setmetatable({}, {__tostring = function() error('nested') end}))");
    println!("error(object whose __tostring fails): {} {:?}", cell.ename(), cell.evalue());
    assert_eq!(cell.status(), "error");
    after_attack(&mut victim, &mut attacker, "error objects");

    // A __gc that errors: Lua turns it into a warning; the cell and the next ones finish.
    let cell = run_cell(
        &mut attacker,
        "setmetatable({}, {__gc = function() error('boom in __gc') end}) collectgarbage() collectgarbage() return 'done'",
    );
    println!("__gc error: {} {:?} err={:?}", cell.status(), cell.result, cell.err);
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    // One collected later, during someone else's cell.
    run_cell(&mut attacker, "setmetatable({}, {__gc = function() error('late boom') end})");
    assert_eq!(value_of(&mut victim, "collectgarbage() collectgarbage() return victim_data"), "\"precious\"");
    after_attack(&mut victim, &mut attacker, "__gc");

    // A coroutine left suspended (and one left suspended inside a pcall).
    let cell = run_cell(
        &mut attacker,
        "co = coroutine.create(function() while true do coroutine.yield(1) end end) coroutine.resume(co)\n\
         co2 = coroutine.wrap(function() pcall(coroutine.yield) end) co2()\n\
         return coroutine.status(co)",
    );
    assert_eq!(cell.result.as_deref(), Some("\"suspended\""), "{:?}", cell.reply);
    assert_eq!(value_of(&mut attacker, "select(2, coroutine.resume(co))"), "1");
    after_attack(&mut victim, &mut attacker, "suspended coroutine");

    // collectgarbage("stop"): the next cell runs with the collector on again, and allocation still
    // works (garbage is collected, the memory limit is not hit by dead data).
    let cell = run_cell(&mut attacker, "collectgarbage('stop') return collectgarbage('isrunning')");
    assert_eq!(cell.result.as_deref(), Some("false"));
    assert_eq!(value_of(&mut attacker, "collectgarbage('isrunning')"), "true");
    let cell = run_cell(&mut attacker, "for i = 1, 200 do local s = string.rep('g', 1e6) end return 'ok'");
    println!(
        "200 MB of garbage under a 64 MB limit after collectgarbage('stop'): {} {}",
        cell.status(),
        cell.evalue()
    );
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    after_attack(&mut victim, &mut attacker, "collectgarbage stop");

    // debug.sethook is the user's own: removing every hook is allowed, and interrupts still work.
    let cell = run_cell(&mut attacker, "debug.sethook(nil)");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    after_attack(&mut victim, &mut attacker, "debug.sethook");

    k.assert_alive();
    assert!(!k.log().contains("panicked"), "{}", k.log());
}

#[test]
fn runaway_allocation_with_a_memory_limit_fails_the_cell_with_memory_error() {
    let k = Kernel::start("alloc", &["--memory-limit", "64"]);
    let mut victim = k.client();
    let mut attacker = k.client();
    assert_eq!(run_cell(&mut victim, "victim_data = 'precious'").status(), "ok");
    for code in [
        "local t = {} while true do t[#t+1] = string.rep('x', 1e6) end",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
        "local s = 'x' while true do s = s .. s end",
        "big = {} for i = 1, 1e9 do big[i] = {} end", // keeps a global to it
    ] {
        let t = Instant::now();
        let cell = run_cell(&mut attacker, code);
        println!("{code}: {} {:?} in {:?}", cell.ename(), cell.evalue(), t.elapsed());
        assert_eq!(cell.status(), "error", "{:?}", cell.reply);
        assert_eq!(cell.ename(), "MemoryError", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("64 MB"), "{:?}", cell.reply);
        if code.starts_with("big") {
            // The attacker's global holds the session at its limit until it lets go: that cell
            // must be able to run.
            assert_eq!(run_cell(&mut attacker, "big = nil collectgarbage()").status(), "ok");
        }
        after_attack(&mut victim, &mut attacker, code);
    }
    k.assert_alive();
}

#[test]
fn runaway_allocation_fails_clearly_even_when_the_error_is_not_a_memory_error() {
    // The same attacks, checked only for what must hold whatever the error is called: the cell fails
    // with an error that says memory, and the kernel, and another client's globals, survive.
    let k = Kernel::start("alloc2", &["--memory-limit", "64"]);
    let mut victim = k.client();
    let mut attacker = k.client();
    assert_eq!(run_cell(&mut victim, "victim_data = 'precious'").status(), "ok");
    let cell = run_cell(&mut attacker, "local t = {} while true do t[#t+1] = string.rep('x', 1e6) end");
    println!("runaway allocation: {} {:?}", cell.ename(), cell.evalue());
    assert_eq!(cell.status(), "error");
    assert!(cell.evalue().contains("memory"), "{:?}", cell.reply);
    after_attack(&mut victim, &mut attacker, "runaway allocation");
    // The limit is a limit on the live heap: after the failed cell, memory is usable again.
    assert_eq!(value_of(&mut attacker, "#string.rep('y', 32e6)"), "32000000");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", k.pid())).unwrap();
    let rss = rss.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("").to_string();
    println!("kernel after the attack: {rss}");
}

#[test]
fn infinite_recursion_without_a_memory_limit_is_a_stack_overflow() {
    let k = Kernel::start("recursion", &[]);
    let mut c = k.client();
    for code in [
        "local function f() return 1 + f() end return f()",
        "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x",
        "local function f(s) return (string.gsub(s, '.', f)) end return f('x')",
        "local co co = coroutine.wrap(function() return co() end) return co()",
    ] {
        let cell = run_cell(&mut c, code);
        println!("{code}: {} {} {:?}", cell.status(), cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        let e = cell.evalue();
        assert!(
            e.contains("stack overflow") || e.contains("C stack overflow") || e.contains("cannot resume"),
            "{code}: {:?}",
            cell.reply
        );
        assert_eq!(value_of(&mut c, "1"), "1");
    }
    // pcall catches the overflow at the deepest level, so this one ends normally: it must just end.
    let cell = run_cell(&mut c, "local function f() return pcall(f) end return f()");
    println!("pcall(f) recursion: {} {:?}", cell.status(), cell.result);
    assert_eq!(value_of(&mut c, "1"), "1");
    k.assert_alive();
}

/// Starts `code` on `runner` in a thread, interrupts it from another client after `after`, and returns
/// the cell and how long the interrupt took to land.
fn interrupt_after(k: &Kernel, code: &str, after: Duration) -> (Cell, Duration) {
    let conn = k.conn();
    let code = code.to_string();
    let runner = std::thread::spawn(move || {
        let mut c = Client::connect_file(&conn, Duration::from_secs(10)).unwrap();
        run_cell(&mut c, &code)
    });
    std::thread::sleep(after);
    let other = k.client();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(5);
    // Interrupt until the runner is done (at most 5 s), as a user pressing Ctrl-C would.
    while !runner.is_finished() && Instant::now() < deadline {
        other.interrupt();
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    if !runner.is_finished() {
        panic!("the cell could not be interrupted within 5 s: {}", tail(&k.log(), 10));
    }
    (runner.join().unwrap(), took)
}

#[test]
fn loops_stay_interruptible_after_attempts_to_remove_the_hook() {
    let k = Kernel::start("hook", &[]);
    let mut victim = k.client();
    run_cell(&mut victim, "victim_data = 'precious'");
    let mut c = k.client();
    // debug.sethook is the user's: an interrupt does not depend on the hook a cell may remove.
    let cell = run_cell(&mut c, "debug.sethook(nil)");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    let cell = run_cell(&mut c, "return pcall(debug.sethook), debug.gethook()");
    println!("pcall(debug.sethook), debug.gethook(): {:?}", cell.result);
    for code in [
        "pcall(debug.sethook) while true do end",
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "while true do os.execute('sleep 0.2') end",
        "coroutine.wrap(function() while true do end end)()",
        "local co = coroutine.create(function() while true do end end) while true do coroutine.resume(co) end",
        "for i = 1, math.huge do local s = tostring(i) end",
    ] {
        let (cell, took) = interrupt_after(&k, code, Duration::from_millis(300));
        println!("{code}: {} after {:?}", cell.ename(), took);
        assert_eq!(cell.ename(), "Interrupted", "{code}: {:?}", cell.reply);
        after_attack(&mut victim, &mut c, code);
    }
    k.assert_alive();
}

#[test]
fn a_loop_around_the_raw_pcall_is_still_interruptible() {
    // pcall is the standard one (no wrapper whose upvalues could be taken), and a loop around it
    // is stopped all the same.
    let k = Kernel::start("rawpcall", &[]);
    let mut c = k.client();
    for n in 1..=4 {
        assert_eq!(value_of(&mut c, &format!("debug.getupvalue(pcall, {n}) == nil")), "true", "upvalue {n}");
    }
    let code = "local raw = select(2, debug.getupvalue(pcall, 2)) or pcall \
                while true do raw(function() while true do end end) end";
    let (cell, took) = interrupt_after(&k, code, Duration::from_millis(300));
    println!("{code}: {} after {took:?}", cell.ename());
    assert_eq!(cell.ename(), "Interrupted");
}

#[test]
#[ignore = "known limitation: Lua runs finalizers with hooks off, so a __gc that never returns cannot be interrupted"]
fn a_finalizer_that_loops_forever_can_be_interrupted() {
    let k = Kernel::start("gcloop", &[]);
    let code = "setmetatable({}, {__gc = function() while true do end end}) collectgarbage() return 1";
    let (cell, took) = interrupt_after(&k, code, Duration::from_millis(300));
    println!("looping __gc: {} after {took:?}", cell.ename());
    assert_eq!(cell.ename(), "Interrupted");
}

/// The tests that flood iopub run one at a time: two floods beside each other on a 2-core machine
/// can starve a reading thread for longer than IOPUB_STALL_MS, and the kernel then rightly sets
/// that reader aside; what they test is the kernel, not this process's scheduling.
fn floods_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FLOODS.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn huge_output_arrives_complete_and_in_order() {
    let _alone = floods_one_at_a_time();
    let k = Kernel::start("output", &[]);
    let mut victim = k.client();
    run_cell(&mut victim, "victim_data = 'precious'");
    let mut c = k.client();
    let t = Instant::now();
    let cell = run_cell(&mut c, "for i = 1, 1e6 do print(i) end return 'end'");
    let took = t.elapsed();
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    let lines: Vec<&str> = cell.out.lines().collect();
    println!("1e6 printed lines: {} lines, {} bytes, in {took:?}", lines.len(), cell.out.len());
    assert_eq!(lines.len(), 1_000_000);
    for (i, l) in lines.iter().enumerate().step_by(9973) {
        assert_eq!(*l, (i + 1).to_string());
    }
    assert_eq!(lines.last(), Some(&"1000000"));
    // One 50 MB write.
    let cell = run_cell(&mut c, "io.write(string.rep('w', 50e6)) return 'end'");
    assert_eq!(cell.status(), "ok");
    assert_eq!(cell.out.len(), 50_000_000);
    after_attack(&mut victim, &mut c, "huge output");
}

// ------------------------------------------------------------------------------------------------
// os.exit
// ------------------------------------------------------------------------------------------------

#[test]
fn os_exit_ends_a_script_not_the_kernel_and_is_refused_in_the_session() {
    let k = Kernel::start("exit", &[]);
    let pid = k.pid();
    let dir = &k.home.dir;
    run_cell(&mut k.client(), "session_value = 'kept'");
    for (body, code) in [
        ("print('before') os.exit(3) print('after')", 3),
        ("os.exit(0)", 0),
        ("os.exit(true)", 0),
        ("os.exit(false)", 1),
        ("os.exit()", 0),
        ("pcall(os.exit, 4) print('after')", 4),
        ("local ok = pcall(function() os.exit(5) end) print('after', ok)", 5),
        ("coroutine.wrap(function() os.exit(6) end)() print('after')", 6),
        ("os.exit(300)", 44), // as lua: the process status keeps the low 8 bits
    ] {
        let script = write_file(dir, "exit.lua", body);
        let out = k.home.run(&["--kernel", "h", "run", script.to_str().unwrap()], "");
        let got = out.status.code();
        println!("{body:50} -> exit {got:?}, stdout {:?}, stderr {:?}", stdout(&out), stderr(&out));
        assert_eq!(got, Some(code), "{body}: {}", stderr(&out));
        assert!(!stdout(&out).contains("after"), "{body}: code after os.exit ran");
        assert!(process_alive(pid), "os.exit in a script killed the kernel");
    }
    let out = k.home.run(&["--kernel", "h", "exec", "os.exit(3)"], "");
    println!("exec os.exit(3) -> exit {:?}, stderr {:?}", out.status.code(), stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("kernel stop"), "{}", stderr(&out));
    let out = k.home.run(&["--kernel", "h", "exec", "pcall(os.exit, 3) return session_value"], "");
    assert!(stdout(&out).contains("kept"), "{}", stderr(&out));
    assert!(process_alive(pid));
    assert_eq!(k.pid(), pid);
}

// ------------------------------------------------------------------------------------------------
// A client that disconnects while the kernel waits for its input
// ------------------------------------------------------------------------------------------------

/// A raw client sends `code` with allow_stdin, optionally waits for the kernel's input_request, then
/// vanishes (its context is destroyed with linger 0). Returns whether the input_request came.
fn vanish(k: &Kernel, code: &str, wait_for_input_request: bool) -> bool {
    let raw = Raw::new(&k.info(), "vanisher");
    let (frames, id) =
        raw.request("execute_request", json!({"code": code, "allow_stdin": true, "stop_on_error": false}));
    raw.send(Chan::Shell, frames);
    let mut asked = false;
    if wait_for_input_request {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !asked && Instant::now() < deadline {
            if raw.stdin.poll(zmq::POLLIN, 100).unwrap() > 0 {
                asked = raw
                    .drain(Chan::Stdin)
                    .iter()
                    .any(|m| m.msg_type() == "input_request" && m.parent_msg_id() == id);
            }
        }
    } else {
        std::thread::sleep(Duration::from_millis(100)); // the request is on its way
    }
    drop(raw);
    asked
}

#[test]
fn a_client_that_vanishes_while_its_cell_waits_for_input_does_not_block_the_kernel() {
    // A long --input-timeout: being served well before it proves the kernel noticed the client going.
    // (The bounds below are a quarter of it: generous on a loaded machine, far below the timeout.)
    let k = Kernel::start("vanish", &["--input-timeout", "240"]);
    let mut next = k.client();
    run_cell(&mut next, "victim_data = 'precious'");

    // 1. The input_request was delivered, then the client vanished.
    assert!(vanish(&k, "waiting = io.read() return waiting", true), "no input_request arrived");
    let t = Instant::now();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited = t.elapsed();
    println!("gone after its input_request: next client served after {waited:?} (--input-timeout 240)");
    assert!(waited < Duration::from_secs(60), "{waited:?}");

    // 2. The same, and the next client also interrupts: served at once.
    assert!(vanish(&k, "waiting = io.read() return waiting", true));
    let t = Instant::now();
    next.interrupt();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited_interrupted = t.elapsed();
    println!("gone after its input_request, then an interrupt: served after {waited_interrupted:?}");
    assert!(waited_interrupted < Duration::from_secs(60), "{waited_interrupted:?}");

    // 3. The client vanished before the kernel asked (its cell was busy for 1 s first).
    vanish(
        &k,
        "local t = os.clock() while os.clock() - t < 1 do end waiting = io.read() return waiting",
        false,
    );
    let t = Instant::now();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited_early = t.elapsed();
    println!(
        "gone before its input_request: next client served after {waited_early:?} (the cell ran 1 s first)"
    );
    assert!(waited_early < Duration::from_secs(60), "{waited_early:?}");
    assert_eq!(value_of(&mut next, "waiting"), "nil");
    let log = k.log();
    println!(
        "log lines about it: {:?}",
        log.lines()
            .filter(|l| l.contains("stdin:"))
            .map(|l| l.split("] ").nth(1).unwrap_or(l))
            .collect::<Vec<_>>()
    );
    k.assert_alive();
}

#[test]
fn a_client_that_never_answers_input_is_cut_off_by_the_input_timeout() {
    let k = Kernel::start("silent", &["--input-timeout", "2"]);
    let raw = k.raw(); // stays connected, never answers
    let (frames, id) = raw.request(
        "execute_request",
        json!({"code": "return io.read()", "allow_stdin": true, "stop_on_error": false}),
    );
    let t = Instant::now();
    raw.send(Chan::Shell, frames);
    let mut seen = Vec::new();
    let reply =
        raw.wait_reply(Chan::Shell, &id, Duration::from_secs(90), &mut seen).expect("an execute_reply");
    let took = t.elapsed();
    println!(
        "silent client: reply after {took:?}: {} {:?}",
        reply.content["status"], reply.content["evalue"]
    );
    // Not before the timeout; the upper bound only catches a kernel that ignores it.
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(60), "{took:?}");
    let evalue = reply.content["evalue"].as_str().unwrap_or("");
    assert!(evalue.contains("no input arrived within 2 s"), "{}", reply.content);
    let mut next = k.client();
    assert_eq!(value_of(&mut next, "1 + 1"), "2");
}

// ------------------------------------------------------------------------------------------------
// Load: 16 clients x N requests on one kernel
// ------------------------------------------------------------------------------------------------

/// A generous deadline for anything that should happen (a loaded 2-core machine is slow).
const LONG: Duration = Duration::from_secs(60);

const LOAD_CLIENTS: usize = 16;
const LOAD_REQUESTS: usize = 1000;
const LOAD_WINDOW: usize = 4;

/// One load client: its own context, DEALER (shell) and SUB (iopub). Request `i` of client `c` has
/// msg_id `load-c-i` and prints `tok-c-i`, so any message can be checked against its parent.
fn load_client(
    info: Value,
    c: usize,
    ready: std::sync::Arc<std::sync::Barrier>,
) -> Result<(usize, usize), String> {
    let ctx = zmq::Context::new();
    let ip = info["ip"].as_str().unwrap().to_string();
    let signer = Signer::new(info["key"].as_str().unwrap());
    let session = format!("load-session-{c}");
    let shell = ctx.socket(zmq::DEALER).unwrap();
    shell.set_linger(0).unwrap();
    shell.set_rcvhwm(0).unwrap();
    shell.set_identity(session.as_bytes()).unwrap();
    shell.connect(&format!("tcp://{ip}:{}", info["shell_port"])).unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&format!("tcp://{ip}:{}", info["iopub_port"])).unwrap();
    // Wait for our iopub_welcome so no output is missed, then start together.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Instant::now() > deadline {
            return Err(format!("client {c}: no iopub_welcome"));
        }
        if sub.poll(zmq::POLLIN, 100).unwrap() > 0 {
            let m = wire::decode(sub.recv_multipart(0).unwrap(), &signer).map_err(|e| e.to_string())?;
            if m.msg_type() == "iopub_welcome" {
                break;
            }
        }
    }
    ready.wait();
    let expected_text = |parent: &str| -> Option<String> {
        let rest = parent.strip_prefix("load-")?;
        let (pc, pi) = rest.split_once('-')?;
        Some(format!("tok-{pc}-{pi}\n"))
    };
    let mut sent = 0;
    let mut replies: HashSet<usize> = HashSet::new();
    let mut own_tokens: HashMap<usize, usize> = HashMap::new();
    let mut stream_seen = 0usize;
    let mut idle_own: HashSet<usize> = HashSet::new();
    let started = Instant::now();
    while replies.len() < LOAD_REQUESTS || idle_own.len() < LOAD_REQUESTS {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "client {c}: timed out with {} replies, {} idles",
                replies.len(),
                idle_own.len()
            ));
        }
        while sent < LOAD_REQUESTS && sent < replies.len() + LOAD_WINDOW {
            let mut h = wire::header("execute_request", &session);
            h["msg_id"] = json!(format!("load-{c}-{sent}"));
            let msg = Message {
                header: h,
                parent_header: json!({}),
                metadata: json!({}),
                content: json!({"code": format!("print('tok-{c}-{sent}')"), "silent": false,
                    "store_history": false, "allow_stdin": false, "stop_on_error": false}),
                ..Message::default()
            };
            shell.send_multipart(wire::encode(&msg, &signer), 0).unwrap();
            sent += 1;
        }
        let mut items = [shell.as_poll_item(zmq::POLLIN), sub.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 1000).unwrap();
        let (shell_ready, sub_ready) = (items[0].is_readable(), items[1].is_readable());
        if shell_ready {
            while let Ok(frames) = shell.recv_multipart(zmq::DONTWAIT) {
                let m = wire::decode(frames, &signer).map_err(|e| format!("client {c}: bad reply: {e}"))?;
                let parent = m.parent_msg_id().to_string();
                let i = parent
                    .strip_prefix(&format!("load-{c}-"))
                    .and_then(|i| i.parse::<usize>().ok())
                    .ok_or(format!("client {c} got a reply to someone else's request {parent}"))?;
                if m.msg_type() != "execute_reply" || m.content["status"] != "ok" {
                    return Err(format!("client {c}: reply {} {}", m.msg_type(), m.content));
                }
                if !replies.insert(i) {
                    return Err(format!("client {c}: two replies to request {i}"));
                }
            }
        }
        if sub_ready {
            while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
                let m = wire::decode(frames, &signer).map_err(|e| format!("client {c}: bad iopub: {e}"))?;
                let parent = m.parent_msg_id();
                let own = parent.strip_prefix(&format!("load-{c}-")).and_then(|i| i.parse::<usize>().ok());
                match m.msg_type() {
                    "stream" => {
                        stream_seen += 1;
                        let text = m.content["text"].as_str().unwrap_or("");
                        // Output is always parented to the request that printed it.
                        if expected_text(parent).as_deref() != Some(text) {
                            return Err(format!("client {c}: stream {text:?} parented to {parent}"));
                        }
                        if let Some(i) = own {
                            *own_tokens.entry(i).or_default() += 1;
                        }
                    }
                    "status" if m.content["execution_state"] == "idle" => {
                        if let Some(i) = own {
                            idle_own.insert(i);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // Keep reading until this client has seen every client's output. It must not give up while output
    // is owed: silence is measured from the end of the last batch it read (on a loaded 2-core machine
    // one batch of thousands of messages takes this thread seconds to decode), and only a long silence
    // ends the wait. (It once ended after a 5 s "silence" that was this thread's own decoding time.)
    let total = LOAD_CLIENTS * LOAD_REQUESTS;
    let mut last_read = Instant::now();
    while stream_seen < total && last_read.elapsed() < Duration::from_secs(60) {
        if sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
            let m = wire::decode(frames, &signer).map_err(|e| format!("client {c}: bad iopub: {e}"))?;
            if m.msg_type() == "stream" {
                stream_seen += 1;
                let text = m.content["text"].as_str().unwrap_or("");
                if expected_text(m.parent_msg_id()).as_deref() != Some(text) {
                    return Err(format!("client {c}: stream {text:?} parented to {}", m.parent_msg_id()));
                }
            }
        }
        last_read = Instant::now();
    }
    let dup: Vec<_> = own_tokens.iter().filter(|(_, n)| **n != 1).collect();
    if own_tokens.len() != LOAD_REQUESTS || !dup.is_empty() {
        return Err(format!("client {c}: {} of its tokens arrived, duplicates {dup:?}", own_tokens.len()));
    }
    Ok((replies.len(), stream_seen))
}

#[test]
fn sixteen_clients_each_get_their_own_replies_and_output_with_nothing_lost() {
    let _alone = floods_one_at_a_time();
    let k = Kernel::start("load", &[]);
    let info = k.info();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(LOAD_CLIENTS + 1));
    let t = Instant::now();
    let handles: Vec<_> = (0..LOAD_CLIENTS)
        .map(|c| {
            let (info, ready) = (info.clone(), ready.clone());
            std::thread::spawn(move || load_client(info, c, ready))
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let took = start.elapsed();
    let mut streams = Vec::new();
    for r in &results {
        match r {
            Ok((_, seen)) => streams.push(*seen),
            Err(e) => panic!("{e}\nlog tail:\n{}", tail(&k.log(), 20)),
        }
    }
    let total = LOAD_CLIENTS * LOAD_REQUESTS;
    println!(
        "{LOAD_CLIENTS} clients x {LOAD_REQUESTS} requests (window {LOAD_WINDOW}): {total} replies in {took:?} \
         ({:.0} req/s; setup {:?}); stream messages seen per client: min {} max {}",
        total as f64 / took.as_secs_f64(),
        start - t,
        streams.iter().min().unwrap(),
        streams.iter().max().unwrap()
    );
    // Every client subscribed before anyone sent, so each saw every client's output: none lost.
    assert!(
        streams.iter().all(|&n| n == total),
        "stream messages seen per client: {streams:?}\nlog tail:\n{}",
        tail(&k.log(), 20)
    );
    // And the kernel's own count agrees: it dropped nothing and set no subscriber aside.
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert_eq!((iopub["dropped"].as_u64(), iopub["set_aside"].as_u64()), (Some(0), Some(0)), "{iopub}");
    k.assert_alive();
}

// ------------------------------------------------------------------------------------------------
// Faults: a state.json that cannot be written
// ------------------------------------------------------------------------------------------------

fn parses(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is torn: {e}\n{text}", path.display()))
}

fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_state_json_that_is_a_directory_gives_clear_errors_and_the_kernel_keeps_running() {
    let k = Kernel::start("statedir", &[]);
    let state = k.home.path("state.json");
    std::fs::create_dir(&state).unwrap();
    let mut c = k.client();
    for code in [
        "state.set('a', 1)",
        "return state.get('a')",
        "state.update('n', function(v) return (v or 0) + 1 end)",
    ] {
        let cell = run_cell(&mut c, code);
        println!("{code} with state.json a directory: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{code}: {:?}", cell.reply);
    }
    assert_eq!(value_of(&mut c, "1 + 1"), "2");
    std::fs::remove_dir(&state).unwrap();
    let cell = run_cell(&mut c, "state.set('b', 2) return state.get('b')");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    assert_eq!(parses(&state)["b"], 2);
    k.assert_alive();
}

/// A small tmpfs (we run as root; skipped with a message otherwise).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Tmpfs { dir })
    }
    /// Makes the directory read-only for new opens: a read-only bind mount over itself (a plain
    /// `remount,ro` is refused while the kernel holds its log and lock open for writing). Dropping
    /// the guard undoes it.
    fn read_only(&self) -> Option<ReadOnly> {
        let bound = std::process::Command::new("mount").arg("--bind").arg(&self.dir).arg(&self.dir).status();
        if !bound.map(|s| s.success()).unwrap_or(false) {
            return None;
        }
        let guard = ReadOnly { dir: self.dir.clone() };
        let s = std::process::Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&self.dir).status();
        s.map(|s| s.success()).unwrap_or(false).then_some(guard)
    }
}

struct ReadOnly {
    dir: PathBuf,
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A kernel whose LLMSPELL_HOME is a 512 KiB tmpfs; None where no tmpfs can be mounted.
struct TmpfsKernel {
    fs: Tmpfs,
    base: Home,
    pid: i32,
    conn: PathBuf,
}

impl TmpfsKernel {
    fn start(name: &str) -> Option<TmpfsKernel> {
        let base = Home::new(name);
        let Some(fs) = Tmpfs::mount(base.path("mnt"), "512k") else {
            println!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        };
        let out = base
            .cmd(&["kernel", "start", "--daemon", "--id", "h"])
            .env("LLMSPELL_HOME", &fs.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let conn = fs.dir.join("kernels/h.json");
        let info: Value = serde_json::from_str(&std::fs::read_to_string(&conn).unwrap()).unwrap();
        Some(TmpfsKernel { pid: info["pid"].as_i64().unwrap() as i32, conn, fs, base })
    }
    fn home(&self) -> PathBuf {
        self.fs.dir.clone()
    }
    fn state(&self) -> PathBuf {
        self.fs.dir.join("state.json")
    }
    fn fill(&self) -> PathBuf {
        let filler = self.fs.dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for TmpfsKernel {
    fn drop(&mut self) {
        let _ = self.base.cmd(&["kernel", "stop", "--all"]).env("LLMSPELL_HOME", &self.fs.dir).output();
    }
}

#[test]
fn disk_full_and_read_only_home_give_clear_errors_and_no_torn_state() {
    let Some(t) = TmpfsKernel::start("diskfull") else { return };
    let (home, state, pid) = (t.home(), t.state(), t.pid);
    let mut c = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1') state.set('n', 1)").status(), "ok");
    assert_eq!(parses(&state)["committed"], "v1");
    let intact = |what: &str| {
        let v = parses(&state);
        assert_eq!((&v["committed"], &v["n"]), (&json!("v1"), &json!(1)), "{what}");
        assert!(tmp_files(&home).is_empty(), "{what}: temporary files left: {:?}", tmp_files(&home));
    };

    // Disk full: fill the tmpfs, then write more state than fits.
    let filler = t.fill();
    for code in
        ["state.set('big', string.rep('x', 200000))", "state.update('n', function(v) return v + 1 end)"]
    {
        let cell = run_cell(&mut c, code);
        println!("disk full: {code}: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{:?}", cell.reply);
        assert!(cell.evalue().contains("No space left on device"), "{:?}", cell.reply);
        intact(code);
    }
    // A cell that does not touch state: the kernel answers (see
    // a_failed_state_write_does_not_fail_later_cells_nor_land_later for what it answers).
    let cell = run_cell(&mut c, "6 * 7");
    println!("disk full: a cell without state: {} {:?} {:?}", cell.status(), cell.result, cell.evalue());
    assert!(cell.result.as_deref() == Some("42"));
    assert!(cell.status() == "ok" || cell.evalue().contains("state.json"), "{:?}", cell.reply);
    intact("a cell without state");
    assert!(process_alive(pid));
    std::fs::remove_file(&filler).unwrap();
    let cell = run_cell(&mut c, "state.set('after', 'full') return (state.get('committed'))");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    let v = parses(&state);
    println!(
        "after freeing space: keys {:?} ('big', whose cell was told it was not saved, {})",
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        if v.get("big").is_some() { "WAS saved later" } else { "is absent" }
    );
    assert_eq!(v["after"], "full");

    // Read-only home.
    let Some(ro) = t.fs.read_only() else {
        println!("SKIPPED the read-only part: cannot make a read-only bind mount here");
        return;
    };
    let before = std::fs::read(&state).unwrap();
    for code in ["state.set('ro', 1)", "state.update('n', function(v) return v + 1 end)"] {
        let cell = run_cell(&mut c, code);
        println!("read-only: {code}: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{:?}", cell.reply);
        assert!(cell.evalue().contains("Read-only file system"), "{:?}", cell.reply);
        assert_eq!(std::fs::read(&state).unwrap(), before);
    }
    let cell = run_cell(&mut c, "1 + 1");
    assert_eq!(cell.result.as_deref(), Some("2"));
    assert!(process_alive(pid));
    drop(ro);
    assert_eq!(run_cell(&mut c, "state.set('rw', 'again')").status(), "ok");
    assert_eq!(parses(&state)["rw"], "again");
    assert!(process_alive(pid));
}

#[test]
fn a_failed_state_write_does_not_fail_later_cells_nor_land_later() {
    let Some(t) = TmpfsKernel::start("diskfull2") else { return };
    let mut c = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    let mut other = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1')").status(), "ok");
    let filler = t.fill();
    let cell = run_cell(&mut c, "state.set('big', string.rep('x', 200000))");
    assert!(cell.evalue().contains("were not saved"), "{:?}", cell.reply);
    let cell = run_cell(&mut other, "6 * 7");
    println!(
        "another client's cell without state while the disk is full: {} {:?}",
        cell.status(),
        cell.evalue()
    );
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(run_cell(&mut other, "x = 1").status(), "ok");
    assert!(parses(&t.state()).get("big").is_none(), "the change reported as not saved was saved later");
}

#[test]
fn a_file_size_limit_on_the_kernel_fails_state_writes_without_killing_it() {
    let k = Kernel::start("fsize", &[]);
    let mut c = k.client();
    let state = k.home.path("state.json");
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1')").status(), "ok");
    let pid = k.pid();
    // RLIMIT_FSIZE of 4 KiB on the running kernel (prlimit(2), as `prlimit --pid` does).
    let lim = libc::rlimit { rlim_cur: 4096, rlim_max: libc::RLIM_INFINITY };
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let conn = k.conn();
    let big = std::thread::spawn(move || {
        let mut c = Client::connect_file(&conn, Duration::from_secs(10)).unwrap();
        let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::None };
        c.execute("state.set('big', string.rep('x', 100000))", &opts, None, &mut |_| {}, &mut |_, _| {
            llmspell::client::LineAnswer::Interrupt
        })
        .map(|r| r.content)
        .map_err(|e| e.to_string())
    });
    let reply = big.join().unwrap();
    println!("state write beyond RLIMIT_FSIZE: {reply:?}; kernel alive: {}", process_alive(pid));
    assert!(process_alive(pid), "SIGXFSZ killed the kernel; log:\n{}", tail(&k.log(), 5));
    let reply = reply.unwrap();
    assert_eq!(reply["status"], "error");
    assert!(reply["evalue"].as_str().unwrap().contains("state.json"), "{reply}");
    assert_eq!(parses(&state)["committed"], "v1");
    assert_eq!(value_of(&mut c, "1"), "1");
}

// ------------------------------------------------------------------------------------------------
// Files and addresses
// ------------------------------------------------------------------------------------------------

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn kernel_files_are_private() {
    let base = Home::new("private");
    let home = base.path("fresh-home");
    let run = |args: &[&str]| {
        let mut c = base.cmd(args);
        c.env("LLMSPELL_HOME", &home).stdin(Stdio::null());
        c.output().unwrap()
    };
    let out = run(&["kernel", "start", "--daemon", "--id", "p"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Client::connect_file(&home.join("kernels/p.json"), Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('k', 1)").status(), "ok");
    drop(c);
    let modes: Vec<(String, u32)> =
        ["", "kernels", "kernels/p.json", "kernels/p.lock", "kernels/p.log", "state.json"]
            .iter()
            .map(|p| (p.to_string(), mode(&home.join(p))))
            .collect();
    let _ = run(&["kernel", "stop", "--all"]);
    println!("modes: {modes:?}");
    for (p, m) in &modes {
        let want = if p.is_empty() || p == "kernels" { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{p}: {m:o}");
    }
}

#[test]
fn a_connection_file_others_can_write_is_refused() {
    let home = Home::new("connperm");
    let k = Kernel::start("connperm-src", &[]);
    let text = std::fs::read_to_string(k.conn()).unwrap();
    drop(k); // its ports are free again
    for m in [0o666, 0o620, 0o602] {
        let f = write_file(&home.dir, "conn.json", &text);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
        let out = home.run_timeout(
            &["kernel", "start", "--connection-file", f.to_str().unwrap()],
            "",
            Duration::from_secs(10),
        );
        println!("mode {m:o}: exit {:?}: {}", out.status.code(), stderr(&out).trim());
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("writable by other users"), "{}", stderr(&out));
        assert!(stderr(&out).contains("conn.json"), "{}", stderr(&out));
    }
}

#[test]
fn a_state_file_others_can_write_is_refused() {
    let k = Kernel::start("stateperm", &[]);
    let state = k.home.path("state.json");
    std::fs::write(&state, "{\"k\": 1}\n").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = k.client();
    let cell = run_cell(&mut c, "return state.get('k')");
    println!("state.json mode 666: {} {:?}", cell.ename(), cell.evalue());
    assert_eq!(cell.status(), "error");
    assert!(cell.evalue().contains("writable by other users"), "{:?}", cell.reply);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{\"k\": 1}\n");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(value_of(&mut c, "(state.get('k'))"), "1");
}

#[test]
fn binding_a_non_loopback_address_warns_that_key_holders_can_run_code() {
    let home = Home::new("bindall");
    // In the foreground the warning goes to stderr.
    let mut child = home
        .cmd(&["kernel", "start", "--id", "w", "--ip", "0.0.0.0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("listening")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    println!("foreground stderr: {lines:#?}");
    let warning = lines.iter().find(|l| l.contains("0.0.0.0") && l.contains("WARN"));
    let warning = warning.unwrap_or_else(|| panic!("no warning: {lines:?}"));
    assert!(warning.contains("key") && warning.contains("run code"), "{warning}");

    // Detached, it goes to the log.
    let out = home.cmd(&["kernel", "start", "--daemon", "--id", "d", "--ip", "0.0.0.0"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(home.kernels_dir().join("d.log")).unwrap();
    assert!(log.contains("binding 0.0.0.0") && log.contains("holds the key"), "{log}");
    // And loopback does not warn.
    let out = home.cmd(&["kernel", "start", "--daemon", "--id", "l"]).output().unwrap();
    assert!(out.status.success());
    let log = std::fs::read_to_string(home.kernels_dir().join("l.log")).unwrap();
    assert!(!log.contains("WARN"), "{log}");
}

/// An iopub subscriber on its own context, welcomed (so it misses nothing sent after this returns).
fn subscriber(ctx: &zmq::Context, info: &Value, rcvhwm: i32) -> zmq::Socket {
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(rcvhwm).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&format!("tcp://127.0.0.1:{}", info["iopub_port"])).unwrap();
    assert!(sub.poll(zmq::POLLIN, 30_000).unwrap() > 0, "no iopub_welcome");
    let welcome = wire::decode(sub.recv_multipart(0).unwrap(), &Signer::new(info["key"].as_str().unwrap()));
    assert_eq!(welcome.unwrap().msg_type(), "iopub_welcome");
    sub
}

/// Reads iopub stream output until `want` (stdout, stderr) bytes have arrived, reading at most
/// `per_sec` messages a second (0: as fast as it can). Gives up only after 60 s without a message.
fn read_streams(sub: &zmq::Socket, info: &Value, want: (usize, usize), per_sec: u64) -> (usize, usize) {
    let signer = Signer::new(info["key"].as_str().unwrap());
    let (mut out, mut err, mut read) = (0, 0, 0u64);
    let started = Instant::now();
    let mut last_read = Instant::now();
    while (out, err) != want && last_read.elapsed() < Duration::from_secs(60) {
        // Paced: message n no earlier than n / per_sec seconds after the start.
        if let Some(micros) = (read * 1_000_000).checked_div(per_sec) {
            let due = started + Duration::from_micros(micros);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        let m = wire::decode(sub.recv_multipart(0).unwrap(), &signer).unwrap();
        read += 1;
        if m.msg_type() == "stream" {
            let n = m.content["text"].as_str().unwrap_or("").len();
            if m.content["name"] == "stdout" {
                out += n;
            } else {
                err += n;
            }
        }
        last_read = Instant::now();
    }
    (out, err)
}

#[test]
fn a_subscriber_that_never_reads_is_set_aside_once_and_four_readers_get_everything() {
    let _alone = floods_one_at_a_time();
    // A client that subscribes to iopub and then reads nothing (a KernelManager's client that only
    // uses shell, a suspended `jupyter console`, or anyone who can reach the port: subscribing needs
    // no key) fills its queue. Sends wait for it once, for IOPUB_STALL_MS; then it is set aside.
    let k = Kernel::start("stall", &[]);
    let info = k.info();
    let ctx = zmq::Context::new();
    let stalled = ctx.socket(zmq::SUB).unwrap();
    stalled.set_rcvhwm(1).unwrap();
    stalled.set_rcvbuf(4096).unwrap();
    stalled.set_linger(0).unwrap();
    stalled.set_subscribe(b"").unwrap();
    stalled.connect(&format!("tcp://127.0.0.1:{}", info["iopub_port"])).unwrap();
    assert!(stalled.poll(zmq::POLLIN, 30_000).unwrap() > 0, "no iopub_welcome for the stalled subscriber");
    let _welcome = stalled.recv_multipart(0).unwrap(); // and never another read

    // 10 000 lines, stdout and stderr alternating so none are coalesced: 20 000 messages.
    const LINES: usize = 10_000;
    let flood = format!("for i = 1, {LINES} do io.write('o') io.stderr:write('e') end");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let info = info.clone();
            // A small queue: their progress shows often, however little CPU they get (see the
            // slow-reader test below).
            let sub = subscriber(&zmq::Context::new(), &info, 100);
            std::thread::spawn(move || read_streams(&sub, &info, (LINES * 2, LINES * 2), 0))
        })
        .collect();
    let mut c = k.client();
    let t = Instant::now();
    let first = run_cell(&mut c, &flood);
    let with_stall = t.elapsed();
    assert_eq!(first.status(), "ok", "{:?}", first.reply);
    let t = Instant::now();
    let second = run_cell(&mut c, &flood);
    let set_aside = t.elapsed();
    println!("{LINES}-line flood beside a subscriber that never reads: {with_stall:?}; once it is set aside: {set_aside:?}");
    for (n, cell) in [first, second].iter().enumerate() {
        assert_eq!(
            (cell.out.len(), cell.err.len()),
            (LINES, LINES),
            "flood {n}: the running client lost output"
        );
    }
    for (n, r) in readers.into_iter().enumerate() {
        let got = r.join().unwrap();
        assert_eq!(got, (LINES * 2, LINES * 2), "reader {n} lost output");
    }
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert!(
        iopub["waited"].as_u64() > Some(0),
        "the flood never filled the stalled queue: the test needs more output"
    );
    // Set aside at least once (it could be again: while the kernel's TCP buffer for it still takes
    // a batch, libzmq lets the pipe fill once more), and nobody who reads lost anything.
    assert!(iopub["set_aside"].as_u64() >= Some(1), "never set aside: {iopub}");
    assert_eq!(iopub["dropped"], 0, "{iopub}");
    assert!(k.log().contains("set aside"), "{}", k.log());
    // Control still answers, and quick cells are complete.
    for i in 0..20 {
        let cell = run_cell(&mut c, &format!("print({i}) io.stderr:write('e{i}')"));
        assert_eq!(
            (cell.out.as_str(), cell.err.as_str()),
            (format!("{i}\n").as_str(), format!("e{i}").as_str())
        );
    }
    k.assert_alive();
}

#[test]
fn a_reader_that_keeps_reading_at_1000_messages_a_second_gets_every_line_of_a_100_000_line_flood() {
    let _alone = floods_one_at_a_time();
    let k = Kernel::start("slowreader", &[]);
    let info = k.info();
    // 100 000 lines in 10 000 stdout messages of 10 lines, each followed by a stderr message (which
    // ends the coalescing): 20 000 messages, 20 s for a reader of 1 000 messages a second.
    const LINES: usize = 100_000;
    let flood = format!(
        "for i = 1, {} do io.write(('0123456789abcdef\\n'):rep(10)) io.stderr:write('.') end",
        LINES / 10
    );
    let want = (LINES * 17, LINES / 10);
    let slow = {
        let info = info.clone();
        // libzmq reports a reader's progress to the kernel each time it has read half its queue
        // (RCVHWM): with pyzmq's default of 1 000 that is every 0.5 s at 1 000 messages/s, but on a
        // machine loaded enough to slow this thread below 500 messages/s, over a second. A queue of
        // 100 keeps the test about reading, not about this thread's share of the CPU.
        let sub = subscriber(&zmq::Context::new(), &info, 100);
        std::thread::spawn(move || read_streams(&sub, &info, want, 1000))
    };
    let mut c = k.client();
    let t = Instant::now();
    let cell = run_cell(&mut c, &flood);
    println!("{LINES}-line flood with a reader of 1 000 messages/s: {:?}", t.elapsed());
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    assert_eq!((cell.out.len(), cell.err.len()), want, "the running client lost output");
    assert_eq!(slow.join().unwrap(), want, "the slow reader lost output");
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert!(
        iopub["waited"].as_u64() > Some(0),
        "the flood never waited for the slow reader: the test needs more output"
    );
    assert_eq!((iopub["set_aside"].as_u64(), iopub["dropped"].as_u64()), (Some(0), Some(0)), "{iopub}");
    k.assert_alive();
}

// ------------------------------------------------------------------------------------------------
// Regression tests from the wire fuzzer (fuzz/fuzz_targets/wire_decode.rs and tests/soak.rs)
// ------------------------------------------------------------------------------------------------

#[path = "../fuzz/wire_check.rs"]
mod wire_check;

#[test]
fn wire_fuzz_regressions() {
    // Inputs the fuzzers found interesting; none may panic.
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![1],
        vec![2],
        b"\x02<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\"}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x01<IDS|MSG>\x00|\x00ZZ\x00|\x00{}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x01<IDS|MSG>\x00|\x00\xff\xfe\xfd\x00|\x00{}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x00<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\"}\x00|\x00{}\x00|\x00{}\x00|\x00{\"n\":1e999}".to_vec(),
        b"\x00<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\",\"msg_id\":\"c\"}\x00|\x00{}\x00|\x00{}\x00|\x00{\"n\":-0.0}".to_vec(),
    ];
    for case in &cases {
        wire_check::check(case);
    }
}

// ------------------------------------------------------------------------------------------------
// Ownership: each client owns its requests
// ------------------------------------------------------------------------------------------------

/// A process standing in for a client: the owner a request names in its metadata.
fn owner_of(child: &std::process::Child) -> Value {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().parse().unwrap();
    json!({ "llmspell": { "owner": { "pid": child.id(), "start": start } } })
}

fn execute(code: &str) -> Value {
    json!({ "code": code, "silent": false, "store_history": true, "allow_stdin": false, "stop_on_error": false })
}

#[test]
fn an_interrupt_naming_a_queued_request_withdraws_it_and_leaves_the_running_cell_alone() {
    let k = Kernel::start("withdraw", &[]);
    let gate = k.home.path("gate");
    let (a, b) = (k.raw(), k.raw());
    // Client A's cell runs until the test opens the gate.
    let started = k.home.path("started");
    let wait = format!(
        "io.open({:?}, 'w'):close() while not io.open({:?}) do end a_done = true return 'a'",
        started.display().to_string(),
        gate.display().to_string()
    );
    let (frames, a_id) = a.request("execute_request", execute(&wait));
    a.send(Chan::Shell, frames);
    assert!(wait_until(LONG, || started.exists()), "A's cell never started");
    // Client B queues a cell behind it, then withdraws it (Ctrl-C while queued).
    let (frames, b_id) = b.request("execute_request", execute("b_ran = true"));
    b.send(Chan::Shell, frames);
    let (frames, int_id) =
        b.request_with("interrupt_request", json!({}), json!({ "llmspell": { "interrupt": b_id } }));
    b.send(Chan::Control, frames);
    let mut seen = Vec::new();
    let reply = b.wait_reply(Chan::Control, &int_id, LONG, &mut seen).expect("an interrupt_reply");
    assert_eq!(reply.content["llmspell"]["withdrawn"], true, "{}", reply.content);
    std::fs::write(&gate, "").unwrap();
    let a_reply = a.wait_reply(Chan::Shell, &a_id, LONG, &mut seen).expect("A's reply");
    assert_eq!(a_reply.content["status"], "ok", "B's Ctrl-C hit A's cell: {}", a_reply.content);
    let b_reply = b.wait_reply(Chan::Shell, &b_id, LONG, &mut seen).expect("B's reply");
    assert_eq!(b_reply.content["status"], "aborted", "{}", b_reply.content);
    let mut c = k.client();
    assert_eq!(value_of(&mut c, "tostring(b_ran) .. ' ' .. tostring(a_done)"), "\"nil true\"");
    assert!(k.log().contains("withdrawn by its client"), "{}", k.log());
}

#[test]
fn a_cell_whose_client_process_ends_is_interrupted_and_its_queued_requests_never_run() {
    let k = Kernel::start("owner", &[]);
    let raw = k.raw();
    let mut client = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let owner = owner_of(&client);
    let started = k.home.path("started");
    let code = format!("io.open({:?}, 'w'):close() while true do end", started.display().to_string());
    let (frames, running) = raw.request_with("execute_request", execute(&code), owner.clone());
    raw.send(Chan::Shell, frames);
    let (frames, queued) = raw.request_with("execute_request", execute("queued_ran = true"), owner);
    raw.send(Chan::Shell, frames);
    let mut c = k.client();
    assert!(wait_until(LONG, || started.exists()), "the cell never started");
    client.kill().unwrap();
    client.wait().unwrap();
    let mut seen = Vec::new();
    let reply = raw
        .wait_reply(Chan::Shell, &running, LONG, &mut seen)
        .unwrap_or_else(|| panic!("no reply once its client is gone; log:\n{}", k.log()));
    assert_eq!(reply.content["ename"], "Interrupted", "{}", reply.content);
    let reply = raw.wait_reply(Chan::Shell, &queued, LONG, &mut seen).expect("the queued request's reply");
    assert_eq!(reply.content["status"], "aborted", "{}", reply.content);
    assert_eq!(value_of(&mut c, "tostring(queued_ran)"), "\"nil\"");
    assert!(k.log().contains("has gone: its cell is interrupted"), "{}", k.log());
}
