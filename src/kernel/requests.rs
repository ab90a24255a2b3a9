//! What clients ask for: receiving a request, reading its content into a typed [`Request`] (missing
//! fields take the protocol's defaults), answering it, and the requests that shell and control
//! answer alike ([`answer_anywhere`]).

use super::history::HistoryRequest;
use super::owner::{Interrupted, Ownership};
use super::Shared;
use crate::lua;
use crate::wire::{self, Message, ReplayGuard, Signer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// What a receive gave.
pub(super) enum Received {
    Request(Message),
    /// Dropped (and logged): oversized, malformed, badly signed or replayed.
    Dropped,
    /// The context has terminated: the kernel is shutting down.
    Closed,
}

/// Receives one multipart message from a client socket. Oversized, malformed, badly signed and
/// replayed messages are dropped and logged here.
pub(super) fn receive(
    socket: &zmq::Socket,
    signer: &Signer,
    guard: &mut ReplayGuard,
    max: usize,
    channel: &str,
) -> Received {
    let mut frames = Vec::new();
    let mut size = 0usize;
    loop {
        match socket.recv_bytes(0) {
            Ok(f) => {
                size += f.len();
                if size <= max {
                    frames.push(f);
                }
            }
            Err(zmq::Error::ETERM) => return Received::Closed,
            Err(e) => {
                log::warn!("{channel}: receive failed: {e}");
                return Received::Dropped;
            }
        }
        if !socket.get_rcvmore().unwrap_or(false) {
            break;
        }
    }
    if size > max {
        log::warn!("{channel}: dropped a message of more than {max} bytes");
        return Received::Dropped;
    }
    let sig = frames
        .iter()
        .position(|f| f == wire::DELIMITER)
        .and_then(|i| frames.get(i + 1).cloned())
        .unwrap_or_default();
    match wire::decode(frames, signer) {
        Ok(msg) if !guard.check(&sig) => {
            log::warn!("{channel}: dropped a replayed message ({})", msg.msg_type());
            Received::Dropped
        }
        Ok(msg) => Received::Request(msg),
        Err(e) => {
            log::warn!("{channel}: dropped a message: {e}");
            Received::Dropped
        }
    }
}

/// Sends on a socket the kernel answers on; false if the message could not go (logged).
pub(super) fn send_frames(socket: &zmq::Socket, frames: Vec<Vec<u8>>, channel: &str) -> bool {
    match socket.send_multipart(frames, 0) {
        Ok(()) => true,
        Err(zmq::Error::ETERM) => false,
        Err(e) => {
            log::warn!("{channel}: a message could not be sent ({e}); dropped");
            false
        }
    }
}

/// A reply on a ROUTER socket (or the push that leads to one), addressed to the asker.
pub(super) fn reply(socket: &zmq::Socket, signer: &Signer, session: &str, req: &Message, content: Value) {
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

/// One request, its content typed.
pub(super) enum Request {
    Execute(ExecuteRequest),
    KernelInfo,
    Complete(CodeAtCursor),
    Inspect(CodeAtCursor),
    IsComplete(IsCompleteRequest),
    History(HistoryRequest),
    CommInfo,
    CommOpen(CommOpen),
    /// comm_msg, comm_close: no comms exist here, so nothing to do.
    CommIgnored,
    /// Our own client names the request it means (`llmspell.interrupt`); others interrupt what runs.
    Interrupt {
        target: Option<String>,
    },
    Shutdown(ShutdownRequest),
    /// debug_request: the Jupyter debugger (debugger.rs), on control.
    Debug,
    /// llmspell_snapshot_request: the session's names for the language server (`lsp/live.rs`).
    Snapshot(SnapshotRequest),
    /// A request type this kernel does not handle: it gets an error reply.
    Unsupported(String),
    /// Not a request at all (a stray reply, say): ignored, with a warning.
    Stray(String),
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct ExecuteRequest {
    pub code: String,
    pub silent: bool,
    pub store_history: bool,
    pub user_expressions: Map<String, Value>,
    pub allow_stdin: bool,
    pub stop_on_error: bool,
}

impl Default for ExecuteRequest {
    fn default() -> Self {
        ExecuteRequest {
            code: String::new(),
            silent: false,
            store_history: true,
            user_expressions: Map::new(),
            allow_stdin: false,
            stop_on_error: true,
        }
    }
}

/// complete_request and inspect_request: code and a cursor (in code points; None: the end).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CodeAtCursor {
    pub code: String,
    pub cursor_pos: Option<u64>,
}

impl CodeAtCursor {
    /// The cursor as a byte offset into `code`.
    pub fn cursor_byte(&self) -> usize {
        match self.cursor_pos {
            None => self.code.len(),
            Some(n) => self.code.char_indices().nth(n as usize).map(|(i, _)| i).unwrap_or(self.code.len()),
        }
    }

    /// A byte offset into `code` in code points, as the protocol counts.
    pub fn chars_before(&self, byte: usize) -> usize {
        self.code[..byte.min(self.code.len())].chars().count()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct IsCompleteRequest {
    pub code: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CommOpen {
    pub comm_id: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ShutdownRequest {
    pub restart: bool,
}

/// `{"since": N}`: the generation the asker has; an unchanged snapshot is not sent again.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SnapshotRequest {
    pub since: Option<u64>,
}

impl Request {
    /// Reads a message's type and content. A content that does not fit its type (a number where
    /// code should be, say) is an error the client gets as an error reply.
    pub fn parse(msg: &Message) -> Result<Request, String> {
        fn content<T: DeserializeOwned>(msg: &Message) -> Result<T, String> {
            // A missing or null content reads as empty: every field then takes its default.
            let c = if msg.content.is_null() { json!({}) } else { msg.content.clone() };
            serde_json::from_value(c).map_err(|e| format!("bad {} content: {e}", msg.msg_type()))
        }
        Ok(match msg.msg_type() {
            "execute_request" => Request::Execute(content(msg)?),
            "kernel_info_request" => Request::KernelInfo,
            "complete_request" => Request::Complete(content(msg)?),
            "inspect_request" => Request::Inspect(content(msg)?),
            "is_complete_request" => Request::IsComplete(content(msg)?),
            "history_request" => Request::History(content(msg)?),
            "comm_info_request" => Request::CommInfo,
            "comm_open" => Request::CommOpen(content(msg)?),
            "comm_msg" | "comm_close" => Request::CommIgnored,
            "interrupt_request" => Request::Interrupt {
                target: msg.metadata["llmspell"]["interrupt"].as_str().map(String::from),
            },
            "shutdown_request" => Request::Shutdown(content(msg)?),
            "debug_request" => Request::Debug,
            "llmspell_snapshot_request" => Request::Snapshot(content(msg)?),
            t if t.ends_with("_request") => Request::Unsupported(t.to_string()),
            t => Request::Stray(t.to_string()),
        })
    }
}

/// The reply to a request whose content could not be read.
pub(super) fn bad_request(problem: &str) -> Value {
    json!({ "status": "error", "ename": "BadRequest", "evalue": problem, "traceback": [] })
}

/// What to do with a request that any channel answers the same way.
pub(super) enum Answer {
    Reply(Value),
    /// Reply, then shut the kernel down.
    ReplyAndExit(Value),
}

/// The requests that need no Lua and are answered alike on control and shell: kernel_info,
/// interrupt, shutdown, and unsupported types. None for the rest (the shell's own).
pub(super) fn answer_anywhere(
    req: &Request,
    shared: &Shared,
    ownership: &Ownership,
    iopub_counts: Value,
) -> Option<Answer> {
    Some(match req {
        Request::KernelInfo => {
            let activity = json!({
                "busy": shared.busy.load(std::sync::atomic::Ordering::Relaxed),
                "running": ownership.running(),
            });
            Answer::Reply(kernel_info_content(iopub_counts, activity))
        }
        Request::Interrupt { target } => {
            let withdrawn = ownership.interrupt(target.as_deref(), shared) == Interrupted::Withdrawn;
            Answer::Reply(json!({"status": "ok", "llmspell": { "withdrawn": withdrawn }}))
        }
        Request::Snapshot(r) => Answer::Reply(snapshot_reply(shared, r.since)),
        Request::Shutdown(s) => Answer::ReplyAndExit(json!({"status": "ok", "restart": s.restart})),
        Request::Unsupported(t) => Answer::Reply(json!({
            "status": "error",
            "ename": "UnsupportedRequest",
            "evalue": format!("llmspell does not handle {t:?} messages"),
            "traceback": [],
        })),
        _ => return None,
    })
}

/// The last snapshot of the session's names, or `unchanged` when the asker has its generation.
pub(super) fn snapshot_reply(shared: &Shared, since: Option<u64>) -> Value {
    shared.live_asked_now();
    let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
    if since == Some(live.generation) {
        return json!({ "status": "ok", "generation": live.generation, "unchanged": true });
    }
    let mut snapshot = (*live.snapshot).clone();
    snapshot["generation"] = json!(live.generation);
    json!({ "status": "ok", "generation": live.generation, "snapshot": snapshot })
}

/// kernel_info_reply's content. `llmspell` holds this kernel's own facts: `iopub` (its counters),
/// and in `activity`, `busy` and the `running` execute request (msg_id, client_pid, seconds).
pub fn kernel_info_content(iopub: Value, activity: Value) -> Value {
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
        // The debugger (debug_request on control): the protocol 5.5 way and the older field.
        "supported_features": ["debugger"],
        "debugger": true,
        "llmspell": { "iopub": iopub, "busy": activity["busy"], "running": activity["running"] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg_type: &str, content: Value) -> Message {
        Message { header: wire::header(msg_type, "s"), content, ..Message::default() }
    }

    #[test]
    fn reply_types_follow_the_request_names() {
        assert_eq!(reply_type("execute_request"), "execute_reply");
        assert_eq!(reply_type("odd"), "odd_reply");
    }

    #[test]
    fn every_message_type_reaches_its_request() {
        let cases = [
            ("execute_request", "Execute"),
            ("kernel_info_request", "KernelInfo"),
            ("complete_request", "Complete"),
            ("inspect_request", "Inspect"),
            ("is_complete_request", "IsComplete"),
            ("history_request", "History"),
            ("comm_info_request", "CommInfo"),
            ("comm_open", "CommOpen"),
            ("comm_msg", "CommIgnored"),
            ("comm_close", "CommIgnored"),
            ("interrupt_request", "Interrupt"),
            ("shutdown_request", "Shutdown"),
            ("debug_request", "Debug"),
            ("llmspell_snapshot_request", "Snapshot"),
            ("no_such_request", "Unsupported"),
            ("execute_reply", "Stray"),
        ];
        for (msg_type, want) in cases {
            let got = match Request::parse(&message(msg_type, json!({}))).unwrap() {
                Request::Execute(_) => "Execute",
                Request::KernelInfo => "KernelInfo",
                Request::Complete(_) => "Complete",
                Request::Inspect(_) => "Inspect",
                Request::IsComplete(_) => "IsComplete",
                Request::History(_) => "History",
                Request::CommInfo => "CommInfo",
                Request::CommOpen(_) => "CommOpen",
                Request::CommIgnored => "CommIgnored",
                Request::Interrupt { .. } => "Interrupt",
                Request::Shutdown(_) => "Shutdown",
                Request::Debug => "Debug",
                Request::Snapshot(_) => "Snapshot",
                Request::Unsupported(_) => "Unsupported",
                Request::Stray(_) => "Stray",
            };
            assert_eq!(got, want, "{msg_type}");
        }
    }

    #[test]
    fn missing_fields_take_the_protocol_defaults_and_wrong_types_are_errors() {
        let Ok(Request::Execute(e)) = Request::parse(&message("execute_request", json!({"code": "1"})))
        else {
            panic!("not an execute request")
        };
        assert_eq!((e.code.as_str(), e.silent, e.store_history, e.stop_on_error), ("1", false, true, true));
        let Ok(Request::Execute(e)) = Request::parse(&message("execute_request", Value::Null)) else {
            panic!("a null content must read as empty")
        };
        assert_eq!(e.code, "");
        let err = Request::parse(&message("execute_request", json!({"code": 42}))).err().unwrap();
        assert!(err.contains("bad execute_request content"), "{err}");
    }

    #[test]
    fn cursor_offsets_count_code_points() {
        let at = |cursor_pos| CodeAtCursor { code: "é = 1; s:up".into(), cursor_pos };
        assert_eq!(at(Some(1)).cursor_byte(), 2);
        assert_eq!(at(None).chars_before(2), 1);
        assert_eq!(at(None).cursor_byte(), at(None).code.len());
        assert_eq!(at(Some(999)).cursor_byte(), at(None).code.len());
    }

    #[test]
    fn unsupported_requests_get_an_error_reply_and_shell_requests_none_here() {
        let (exit, _rx) = crossbeam_channel::unbounded();
        let (wake, _wrx) = crossbeam_channel::bounded(1);
        let shared = Shared::new(exit, wake);
        let ownership = Ownership::new().unwrap();
        let unsupported = Request::Unsupported("x_request".into());
        let Some(Answer::Reply(r)) = answer_anywhere(&unsupported, &shared, &ownership, json!({})) else {
            panic!()
        };
        assert_eq!((r["status"].as_str(), r["ename"].as_str()), (Some("error"), Some("UnsupportedRequest")));
        let Some(Answer::ReplyAndExit(r)) = answer_anywhere(
            &Request::Shutdown(ShutdownRequest { restart: true }),
            &shared,
            &ownership,
            json!({}),
        ) else {
            panic!()
        };
        assert_eq!(r["restart"], true);
        assert!(answer_anywhere(&Request::CommInfo, &shared, &ownership, json!({})).is_none());
        let Some(Answer::Reply(info)) =
            answer_anywhere(&Request::KernelInfo, &shared, &ownership, json!({"sent": 3}))
        else {
            panic!()
        };
        assert_eq!(info["llmspell"]["iopub"]["sent"], 3);
        answer_anywhere(&Request::Interrupt { target: None }, &shared, &ownership, json!({}));
        assert!(shared.interrupt.is_set());
    }
}
