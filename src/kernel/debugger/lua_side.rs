//! The Lua thread's side of the debugger: the port the hook (`lua/debug_hook.rs`) and the debugger's
//! Lua code talk through, serving what control forwarded; and where its answers and events go
//! (`Transport`: the kernel's sockets, or a DAP client's stdout).

use super::{canonical, is_resume, Command, Debugger, Phase, REPLIES_ENDPOINT};
use crate::kernel::frontend::Frontend;
use crate::kernel::iopub::Publisher;
use crate::kernel::requests::reply;
use crate::lua::{self, DebugConfig, DebugFlags, Interpreter};
use crate::wire::{Message, Signer};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Where the Lua thread's debug answers and events go: the kernel's sockets, or a DAP client's stdout
/// (`llmspell dap`).
pub(crate) trait Transport {
    /// The response to a request (a DAP response message).
    fn respond(&self, request: &Message, response: Value);
    /// A DAP event (body and name); `debugger` numbers it.
    fn event(&self, debugger: &Debugger, event: &str, body: Value);
    /// Output the program wrote so far goes out before a stop.
    fn flush_output(&self);
}

/// The kernel's transport: replies through the inproc PUSH to control, events on iopub.
pub(crate) struct KernelTransport {
    publisher: Publisher,
    replies: zmq::Socket,
    signer: Signer,
    session: String,
    frontend: Rc<RefCell<Frontend>>,
}

impl KernelTransport {
    pub(crate) fn new(
        ctx: &zmq::Context,
        frontend: Rc<RefCell<Frontend>>,
    ) -> Result<KernelTransport, String> {
        let replies = ctx.socket(zmq::PUSH).map_err(|e| e.to_string())?;
        replies.set_linger(1000).map_err(|e| e.to_string())?;
        replies.connect(REPLIES_ENDPOINT).map_err(|e| format!("cannot connect {REPLIES_ENDPOINT}: {e}"))?;
        let (publisher, signer, session) = {
            let f = frontend.borrow();
            (f.publisher.clone(), f.publisher.signer().clone(), f.publisher.session().to_string())
        };
        Ok(KernelTransport { publisher, replies, signer, session, frontend })
    }
}

impl Transport for KernelTransport {
    fn respond(&self, request: &Message, response: Value) {
        reply(&self.replies, &self.signer, &self.session, request, response);
    }

    fn event(&self, debugger: &Debugger, event: &str, body: Value) {
        debugger.event(&self.publisher, event, body);
    }

    fn flush_output(&self) {
        if let Ok(mut f) = self.frontend.try_borrow_mut() {
            f.flush_all();
        }
        self.publisher.release();
    }
}

/// The Lua thread's side: the port the hook and the debugger's Lua code talk through.
pub(crate) struct LuaSide {
    debugger: Arc<Debugger>,
    transport: Box<dyn Transport>,
    /// Requests handed to the Lua code, by id, until answered.
    pending: RefCell<HashMap<u64, Message>>,
    /// The next pause-stop is the program's entry (`llmspell dap`'s stopOnEntry).
    entry: std::cell::Cell<bool>,
}

impl LuaSide {
    pub(crate) fn new(debugger: Arc<Debugger>, transport: Box<dyn Transport>) -> LuaSide {
        LuaSide { debugger, transport, pending: RefCell::default(), entry: std::cell::Cell::new(false) }
    }

    /// The first stop (a pause asked for before the program started) is reported as "entry".
    pub(crate) fn stop_on_entry(&self) {
        self.entry.set(true);
        self.debugger.pause_at_start();
    }

    fn send_response(&self, msg: &Message, response: Value) {
        self.transport.respond(msg, response);
    }

    /// Serves the queued requests while Lua is not stopped (between requests, around a cell).
    pub(crate) fn serve_queued(&self, interp: &mut Interpreter) {
        self.debugger.clear_wake();
        while let Ok(command) = self.debugger.incoming.try_recv() {
            let Command::Request { msg, request, .. } = command else { continue };
            let command = request["command"].as_str().unwrap_or("");
            let result = if is_resume(command) {
                Ok(json!({ "allThreadsContinued": true }))
            } else {
                let (ok, text) = interp.debug_request(&request);
                parse_body(ok, &text)
            };
            if command == "inspectVariables" {
                if let Ok(body) = &result {
                    self.debugger.lock().last_variables = Some(body.clone());
                }
            }
            self.send_response(&msg, self.debugger.response(&request, result));
        }
    }

    /// The phase changes (around a cell): requests queued meanwhile are served now.
    pub(crate) fn enter_phase(&self, phase: Phase, interp: &mut Interpreter) {
        self.debugger.set_phase(phase);
        self.serve_queued(interp);
    }
}

fn parse_body(ok: bool, text: &str) -> Result<Value, String> {
    if !ok {
        return Err(text.to_string());
    }
    serde_json::from_str(text).map_err(|e| format!("internal error: a debugger answer is not JSON ({e})"))
}

impl lua::DebugPort for LuaSide {
    fn flags(&self) -> Arc<DebugFlags> {
        self.debugger.flags.clone()
    }

    fn config(&self) -> DebugConfig {
        self.debugger.config()
    }

    fn stopped(&self, reason: &str, text: Option<&str>) {
        // What the program printed so far shows before the stop.
        self.transport.flush_output();
        self.debugger.set_phase(Phase::Stopped);
        let reason = if reason == "pause" && self.entry.replace(false) { "entry" } else { reason };
        let mut body = json!({ "reason": reason, "threadId": 1, "allThreadsStopped": true });
        if let Some(t) = text {
            body["text"] = json!(t);
            body["description"] = json!(t);
        }
        self.transport.event(&self.debugger, "stopped", body);
    }

    fn next_command(&self) -> Value {
        match self.debugger.incoming.recv() {
            Ok(Command::Request { id, msg, request }) => {
                self.pending.borrow_mut().insert(id, *msg);
                let mut cmd = request;
                cmd["id"] = json!(id);
                cmd
            }
            Ok(Command::Resume) | Err(_) => json!({ "command": "__resume" }),
        }
    }

    fn respond(&self, id: u64, ok: bool, body_or_message: &str) {
        let Some(msg) = self.pending.borrow_mut().remove(&id) else { return };
        let result = parse_body(ok, body_or_message);
        if msg.content["command"] == "inspectVariables" {
            if let Ok(body) = &result {
                self.debugger.lock().last_variables = Some(body.clone());
            }
        }
        self.send_response(&msg, self.debugger.response(&msg.content, result));
    }

    fn resumed(&self, how: &str) {
        self.debugger.set_phase(Phase::Running);
        // The resuming request (continue, next...) is answered here: the Lua side returned it.
        let pending: Vec<(u64, Message)> = self.pending.borrow_mut().drain().collect();
        for (_, msg) in pending {
            let ok = json!({ "allThreadsContinued": true });
            self.send_response(&msg, self.debugger.response(&msg.content, Ok(ok)));
        }
        if how != "disconnect" && how != "__resume" {
            let body = json!({ "threadId": 1, "allThreadsContinued": true });
            self.transport.event(&self.debugger, "continued", body);
        }
    }

    fn output(&self, text: &str) {
        self.transport.event(&self.debugger, "output", json!({ "category": "console", "output": text }));
    }

    fn canonical(&self, path: &str) -> String {
        canonical(path)
    }
}
