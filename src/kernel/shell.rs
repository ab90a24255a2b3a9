//! The shell: the request loop on the Lua thread. Busy/idle around every request, one dispatch from
//! request to handler, execution counting and history, the interpreter behind it.

use super::debugger::{KernelTransport, LuaSide, Phase};
use super::frontend::{Frontend, FrontendHandle};
use super::history::History;
use super::owner::Ownership;
use super::requests::{
    answer_anywhere, bad_request, receive, reply, Answer, CodeAtCursor, ExecuteRequest, Received, Request,
};
use super::{Exit, Options, Shared};
use crate::connection;
use crate::lua::{self, Completeness, Interpreter, Outcome};
use crate::wire::{Message, ReplayGuard, Signer};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) struct Shell {
    interp: Interpreter,
    frontend: Rc<RefCell<Frontend>>,
    /// The shell socket: requests are read one at a time, in arrival order, and replied to here
    /// (no hand-off between threads on the request path).
    socket: zmq::Socket,
    guard: ReplayGuard,
    max_message_bytes: usize,
    signer: Signer,
    session: String,
    shared: Arc<Shared>,
    ownership: Arc<Ownership>,
    execution_count: u64,
    history: History,
    /// The debugger's Lua-thread side: debug requests forwarded by control are served through it.
    debug: Rc<LuaSide>,
    /// Control asks here for a fresh snapshot of the session's names (`Shared::live_asked_now`).
    live_wake: zmq::Socket,
}

impl Shell {
    pub(super) fn new(
        ctx: &zmq::Context,
        socket: zmq::Socket,
        frontend: Frontend,
        shared: &Arc<Shared>,
        ownership: Arc<Ownership>,
        opts: &Options,
    ) -> Result<Shell, String> {
        let signer = frontend.publisher.signer().clone();
        let session = frontend.publisher.session().to_string();
        let frontend = Rc::new(RefCell::new(frontend));
        let mut interp = Interpreter::new(
            Box::new(FrontendHandle(frontend.clone())),
            shared.interrupt.clone(),
            lua::Options {
                memory_limit: opts.memory_limit_mb.map(|mb| mb << 20),
                state_path: connection::home().join("state.json"),
            },
        )?;
        let transport = KernelTransport::new(ctx, frontend.clone())?;
        let debug = Rc::new(LuaSide::new(shared.debugger.clone(), Box::new(transport)));
        interp.attach_debugger(debug.clone())?;
        shared.set_live(interp.live_snapshot());
        let live_wake = super::bound_pull(ctx, super::LIVE_WAKE)?;
        Ok(Shell {
            live_wake,
            interp,
            debug,
            frontend,
            socket,
            guard: ReplayGuard::new(10_000),
            max_message_bytes: opts.max_message_bytes,
            signer,
            session,
            shared: shared.clone(),
            ownership,
            execution_count: 0,
            history: History::open(Some(history_path(opts))),
        })
    }

    /// Serves requests until the kernel shuts down.
    pub(super) fn run(mut self) {
        while let Some(msg) = self.wait_request() {
            self.serve(Arc::new(msg));
        }
    }

    /// The next request, waiting for it; None once the kernel is shutting down. Debug requests the
    /// control thread forwards meanwhile (inspectVariables, evaluate...) are served while waiting.
    fn wait_request(&mut self) -> Option<Message> {
        loop {
            let wake = self.shared.debugger.wake_fd();
            let mut items = [
                self.socket.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(wake, zmq::POLLIN),
                self.live_wake.as_poll_item(zmq::POLLIN),
            ];
            if let Err(zmq::Error::ETERM) = zmq::poll(&mut items, -1) {
                return None;
            }
            let (request, debug, live) =
                (items[0].is_readable(), items[1].is_readable(), items[2].is_readable());
            if debug {
                self.debug.serve_queued(&mut self.interp);
            }
            if live {
                while self.live_wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
                self.take_live_snapshot();
            }
            if !request {
                continue;
            }
            match receive(&self.socket, &self.signer, &mut self.guard, self.max_message_bytes, "shell") {
                Received::Closed => return None,
                Received::Dropped => continue, // logged: look again
                Received::Request(msg) => {
                    self.shared.touch();
                    return Some(msg);
                }
            }
        }
    }

    /// The next request if one is already waiting.
    fn queued_request(&mut self) -> Option<Message> {
        while matches!(self.socket.poll(zmq::POLLIN, 0), Ok(n) if n > 0) {
            if let Some(msg) = self.wait_request() {
                return Some(msg);
            }
        }
        None
    }

    /// One request from busy to idle.
    fn serve(&mut self, msg: Arc<Message>) {
        self.shared.busy.store(true, Ordering::Relaxed);
        // A bug in a handler must cost one request, not the shell for good.
        let stop = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(&msg))) {
            Ok(stop) => stop,
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
                msg.content["stop_on_error"].as_bool().unwrap_or(true)
            }
        };
        if stop {
            self.abort_queued(&msg);
        }
        self.end(&msg);
        self.frontend.borrow().publisher.iopub.output.trim_if_large();
        self.shared.touch();
        self.shared.busy.store(false, Ordering::Relaxed);
        // After the reply and idle, so the cell's client does not wait for it. Under a stream of
        // requests nobody's editor watches, skipped while the next one waits: control asks for one
        // when an editor comes (`Shared::live_asked_now`).
        let waiting = matches!(self.socket.poll(zmq::POLLIN, 0), Ok(n) if n > 0);
        if self.shared.live_stale.load(Ordering::Relaxed) && (self.shared.live_watched() || !waiting) {
            self.take_live_snapshot();
        }
    }

    /// What editors see of the session (`llmspell_snapshot_request`), taken between cells.
    fn take_live_snapshot(&mut self) {
        self.shared.live_stale.store(false, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let snapshot = self.interp.live_snapshot();
        log::debug!("live snapshot taken in {:?}", started.elapsed());
        self.shared.set_live(snapshot);
    }

    /// After a failed cell with stop_on_error: aborts the execute requests queued behind it, as
    /// ipykernel does — only the failed client's own (other clients of a shared kernel did not ask
    /// to depend on it), and before the failed request's idle (a client that waits for idle and then
    /// sends more code must not see that aborted).
    fn abort_queued(&mut self, failed: &Message) {
        let session = failed.header["session"].clone();
        while let Some(next) = self.queued_request() {
            let next = Arc::new(next);
            if next.msg_type() == "execute_request" && next.header["session"] == session {
                self.begin(&next);
                self.reply(&next, json!({"status": "aborted", "execution_count": self.execution_count}));
            } else {
                let _ = self.handle(&next);
            }
            self.end(&next);
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
        reply(&self.socket, &self.signer, &self.session, req, content);
    }

    fn publish(&self, msg_type: &str, content: Value) {
        self.frontend.borrow_mut().publish(msg_type, content);
    }

    /// Serves one request up to its reply (the caller publishes idle). True if it was an execute
    /// request that failed and asked to stop on error.
    fn handle(&mut self, msg: &Arc<Message>) -> bool {
        self.begin(msg);
        let req = match Request::parse(msg) {
            Ok(req) => req,
            Err(problem) => {
                self.reply(msg, bad_request(&problem));
                return false;
            }
        };
        let counts = self.frontend.borrow().publisher.counts();
        match answer_anywhere(&req, &self.shared, &self.ownership, counts) {
            Some(Answer::Reply(content)) => self.reply(msg, content),
            Some(Answer::ReplyAndExit(content)) => {
                self.reply(msg, content);
                let _ = self.shared.exit.send(Exit::Shutdown);
            }
            None => return self.handle_here(msg, req),
        }
        false
    }

    /// The requests only the shell serves: those that need the interpreter or the history.
    fn handle_here(&mut self, msg: &Message, req: Request) -> bool {
        match req {
            Request::Execute(e) => {
                if !self.ownership.start(msg) {
                    // Withdrawn by its client, or the client has gone: it never runs.
                    self.reply(msg, json!({"status": "aborted", "execution_count": self.execution_count}));
                    return false;
                }
                let stop = e.stop_on_error;
                let failed = match msg.metadata["llmspell"].get("run") {
                    Some(run) => self.run_isolated(msg, run, e.silent),
                    None => self.execute(msg, e),
                };
                self.ownership.end();
                return failed && stop;
            }
            Request::Complete(c) => self.complete(msg, &c),
            Request::Inspect(c) => self.inspect(msg, &c),
            Request::IsComplete(c) => {
                let content = match self.interp.is_complete(&c.code) {
                    Completeness::Complete => json!({"status": "complete"}),
                    Completeness::Incomplete(indent) => json!({"status": "incomplete", "indent": indent}),
                    Completeness::Invalid => json!({"status": "invalid"}),
                };
                self.reply(msg, content);
            }
            Request::History(h) => {
                self.reply(msg, json!({"status": "ok", "history": self.history.query(&h)}))
            }
            Request::CommInfo => self.reply(msg, json!({"status": "ok", "comms": {}})),
            // No comm targets exist in this kernel: close what a client opens, as the spec asks.
            Request::CommOpen(c) => self.publish("comm_close", json!({ "comm_id": c.comm_id, "data": {} })),
            Request::CommIgnored => {}
            Request::Stray(other) => log::warn!("shell: ignored a {other:?} message"),
            Request::Debug => self.reply(
                msg,
                json!({
                    "status": "error", "ename": "UnsupportedRequest",
                    "evalue": "debug_request belongs on the control channel", "traceback": [],
                }),
            ),
            // Answered by answer_anywhere.
            Request::KernelInfo
            | Request::Interrupt { .. }
            | Request::Shutdown(_)
            | Request::Snapshot(_)
            | Request::Unsupported(_) => {}
        }
        false
    }

    fn complete(&mut self, msg: &Message, c: &CodeAtCursor) {
        let (matches, start, end) = self.interp.complete(&c.code, c.cursor_byte());
        let content = json!({
            "status": "ok",
            "matches": matches,
            "cursor_start": c.chars_before(start),
            "cursor_end": c.chars_before(end),
            "metadata": {},
        });
        self.reply(msg, content);
    }

    fn inspect(&mut self, msg: &Message, c: &CodeAtCursor) {
        let doc = self.interp.inspect(&c.code, c.cursor_byte());
        let data = doc.as_ref().map(|d| json!({ "text/plain": d })).unwrap_or(json!({}));
        self.reply(msg, json!({"status": "ok", "found": doc.is_some(), "data": data, "metadata": {}}));
    }

    /// Runs a cell and replies; true if it failed.
    fn execute(&mut self, msg: &Message, req: ExecuteRequest) -> bool {
        if let Some(word) = exit_word(&req.code).filter(|w| self.interp.global_is_nil(w)) {
            // `exit`/`quit` leave the front end (IPython's ask_exit payload), never the shared kernel.
            log::debug!("shell: {word} asks the front end to leave");
            let payload = json!([{ "source": "ask_exit", "keepkernel": true }]);
            let count = self.execution_count;
            self.reply(msg, json!({ "status": "ok", "execution_count": count, "payload": payload, "user_expressions": {} }));
            return false;
        }
        if let Some(name) = help_query(&req.code) {
            // `string.format?`: the documentation, in the pager, as IPython shows `obj?`.
            let text = self
                .interp
                .inspect(name, name.len())
                .unwrap_or_else(|| format!("Object `{name}` not found."));
            let payload = json!([{ "source": "page", "data": { "text/plain": text }, "start": 0 }]);
            let count = self.execution_count;
            self.reply(msg, json!({ "status": "ok", "execution_count": count, "payload": payload, "user_expressions": {} }));
            return false;
        }
        let silent = req.silent;
        let store_history = req.store_history && !silent;
        let ours = &msg.metadata["llmspell"];
        {
            let mut f = self.frontend.borrow_mut();
            f.allow_stdin = req.allow_stdin;
            f.raw_stdin = ours["stdin"] == "raw";
            f.silent = silent;
        }
        if store_history {
            self.execution_count += 1;
            self.history.push(self.execution_count, &req.code);
        }
        let count = self.execution_count;
        if !silent {
            let content = json!({ "code": req.code, "execution_count": count });
            self.frontend.borrow().publisher.publish_held(msg, "execute_input", content);
        }
        let outcome = self.run_cell(&req.code);
        self.shared.live_stale.store(true, Ordering::Relaxed);
        let user_expressions = match outcome.error {
            None => self.user_expressions(&req.user_expressions),
            Some(_) => Map::new(),
        };
        if store_history {
            let text = outcome.result.as_ref().and_then(|d| d["text/plain"].as_str().map(String::from));
            self.history.set_last_output(text);
        }
        if !silent {
            self.publish_outcome(count, &outcome);
        }
        let content = execute_reply(count, &outcome, user_expressions);
        self.frontend.borrow_mut().flush_all();
        self.reply(msg, content);
        outcome.error.is_some()
    }

    /// `llmspell --remote URL run`: the script in a process of its own, not in the session (see
    /// `remote_run.rs`); true if it could not run.
    fn run_isolated(&mut self, msg: &Message, run: &Value, silent: bool) -> bool {
        let socket = self.shared.run_socket.as_deref();
        let mut content = {
            let mut f = self.frontend.borrow_mut();
            f.silent = silent;
            let wake = self.shared.interrupt_fd.as_ref();
            let content = super::remote_run::serve(run, socket, &self.shared.interrupt, wake, &mut *f);
            f.flush_all();
            content
        };
        content["execution_count"] = json!(self.execution_count);
        let failed = content["status"] != "ok";
        self.reply(msg, content);
        failed
    }

    /// The interpreter runs the code, with the output of child processes it starts forwarded.
    fn run_cell(&mut self, code: &str) -> Outcome {
        // A stale interrupt (sent while nothing ran) must not kill this cell.
        self.shared.interrupt.take();
        let child_output = self.frontend.borrow().child_output.clone();
        child_output.set_parent(Some(self.frontend.borrow().parent.clone()));
        self.frontend.borrow_mut().children = false;
        // While a debugger is attached the cell is named after its file (JupyterLab's name for it).
        let path = self.shared.debugger.cell_path(code);
        self.debug.enter_phase(Phase::Running, &mut self.interp);
        let outcome = self.interp.execute_named(code, path.as_deref());
        self.debug.enter_phase(Phase::Idle, &mut self.interp);
        if self.frontend.borrow().children {
            // A child may still have been writing (io.popen's stderr): publish that first. (Only
            // then: the round trip to the forwarding thread is not free.)
            lua::Host::sync_output(&mut *self.frontend.borrow_mut());
        }
        child_output.set_parent(None);
        outcome
    }

    fn user_expressions(&mut self, exprs: &Map<String, Value>) -> Map<String, Value> {
        let mut values = Map::new();
        for (name, expr) in exprs {
            let v = match self.interp.evaluate(expr.as_str().unwrap_or("")) {
                Ok(data) => json!({"status": "ok", "data": data, "metadata": {}}),
                Err(e) => {
                    json!({"status": "error", "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback})
                }
            };
            values.insert(name.clone(), v);
        }
        values
    }

    fn publish_outcome(&self, count: u64, outcome: &Outcome) {
        if let Some(data) = &outcome.result {
            self.publish("execute_result", json!({ "execution_count": count, "data": data, "metadata": {} }));
        }
        if let Some(e) = &outcome.error {
            self.publish("error", json!({ "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback }));
        }
    }
}

/// The kernel's history file, named for it: its id (a Jupyter-launched kernel's is its connection
/// file's name, which Jupyter keeps across restarts), or Enterprise Gateway's kernel id.
fn history_path(opts: &Options) -> std::path::PathBuf {
    let name = opts.gateway.as_ref().map_or(opts.id.as_str(), |g| g.kernel_id.as_str());
    super::history_file::path_for(&connection::home(), name)
}

/// `name?` (a name, dotted or with `:`) alone in a cell: the name.
fn help_query(code: &str) -> Option<&str> {
    let name = code.trim().strip_suffix('?')?.trim_end();
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))).then_some(name)
}

/// `exit`, `quit`, `exit()` or `quit()` alone in a cell: the word.
fn exit_word(code: &str) -> Option<&'static str> {
    match code.trim().trim_end_matches(';').trim_end() {
        "exit" | "exit()" => Some("exit"),
        "quit" | "quit()" => Some("quit"),
        _ => None,
    }
}

fn execute_reply(count: u64, outcome: &Outcome, user_expressions: Map<String, Value>) -> Value {
    let payload: Vec<Value> = outcome
        .pages
        .iter()
        .map(|text| json!({ "source": "page", "data": { "text/plain": text }, "start": 0 }))
        .collect();
    match &outcome.error {
        None => json!({
            "status": "ok", "execution_count": count, "payload": payload, "user_expressions": user_expressions,
        }),
        Some(e) => json!({
            "status": "error", "execution_count": count, "ename": e.ename, "evalue": e.evalue,
            "traceback": e.traceback, "payload": payload, "user_expressions": {},
        }),
    }
}
