//! The Jupyter debugger protocol: `debug_request` on control, `debug_reply` back, `debug_event` on
//! iopub, each carrying a DAP message.
//!
//! Threads: the control thread answers what needs no Lua (debugInfo, initialize, attach, dumpCell,
//! setBreakpoints, pause, ...) itself. What needs Lua (stackTrace, variables, evaluate, continue, ...)
//! it forwards to the Lua thread through a channel, with a wake-up (`sys::Wakeup`) to wake that thread while it waits
//! for shell requests; the Lua thread answers through an inproc PUSH socket that control polls
//! beside its ROUTER and forwards. While the program is stopped the Lua thread waits on the channel
//! inside the hook (`lua/debug_hook.rs`). While a cell runs, `inspectVariables` is answered from the
//! last answer the Lua thread gave, and requests that need a stopped program get an error.

mod lua_side;
mod recent_cells;

pub(super) use lua_side::KernelTransport;
pub(crate) use lua_side::{LuaSide, Transport};

use super::iopub::Publisher;
use crate::lua::{self, Breakpoint, DebugConfig, DebugFlags};
use crate::sys::Wakeup;
use crate::wire::Message;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The seed of the cell file names' hash (any fixed value: JupyterLab reads it from debugInfo).
const HASH_SEED: u32 = 0x4C75_6121;
/// Where the Lua thread's debug replies reach the control thread.
pub(super) const REPLIES_ENDPOINT: &str = "inproc://debug-replies";

/// What the Lua thread is doing, as the debugger needs to know.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    /// Waiting for shell requests: requests that need Lua are forwarded and served at once.
    Idle,
    /// A cell runs.
    Running,
    /// Stopped in the hook, serving debug requests.
    Stopped,
}

/// A request for the Lua thread.
pub(super) enum Command {
    Request {
        id: u64,
        msg: Box<Message>,
        request: Value,
    },
    /// Resume a stopped program at once (interrupt, shutdown, disconnect).
    Resume,
}

#[derive(Default)]
struct State {
    /// attach'ed and not yet disconnected.
    started: bool,
    /// The client's breakpoints by canonical path, as it sent them.
    breakpoints: BTreeMap<String, Vec<Value>>,
    exception_filters: Vec<String>,
    phase: Option<Phase>,
    /// The last inspectVariables body: the answer while a cell runs.
    last_variables: Option<Value>,
    /// The latest cells by their file path (dumped or run while debugging), for `source`; older
    /// ones are read back from their files.
    sources: recent_cells::RecentCells,
    /// The cells run while debugging that define functions, and the cell running now: a breakpoint
    /// in any other cell file cannot be hit (no function of it exists), so it costs no hook. (Only
    /// those: the set grows with what the session's code keeps, not with every cell.)
    executed: HashSet<String>,
    running_cell: Option<String>,
    /// The last debug request: parent of the events.
    parent: Option<Message>,
    next_id: u64,
}

/// The debugger's state, shared by the control thread, the Lua thread and whoever interrupts.
pub(crate) struct Debugger {
    state: Mutex<State>,
    /// The configuration's generation and the pause flag: the hook reads them at every event, no lock.
    flags: Arc<DebugFlags>,
    seq: AtomicU64,
    commands: Sender<Command>,
    pub(super) incoming: Receiver<Command>,
    /// Written after a command is queued: wakes the Lua thread while it waits for shell.
    /// None if the system refused one: then the Lua thread notices commands only between requests.
    wake: Option<Wakeup>,
    tmp_prefix: String,
}

impl Debugger {
    pub(crate) fn new() -> Debugger {
        let (commands, incoming) = crossbeam_channel::unbounded();
        let wake = Wakeup::new().ok();
        let tmp = std::env::temp_dir().join(format!("llmspell_{}", std::process::id()));
        Debugger {
            state: Mutex::default(),
            flags: Arc::default(),
            seq: AtomicU64::new(1),
            commands,
            incoming,
            wake,
            tmp_prefix: format!("{}/", tmp.display()),
        }
    }

    /// Removes the cell files dumpCell wrote (the kernel is shutting down).
    pub(super) fn remove_files(&self) {
        let _ = std::fs::remove_dir_all(&self.tmp_prefix);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// -1 (which poll skips) without a wake-up.
    pub(super) fn wake_fd(&self) -> RawFd {
        self.wake.as_ref().map_or(-1, Wakeup::fd)
    }

    /// Empties the wake-up counter (the Lua thread, before it drains the channel).
    pub(super) fn clear_wake(&self) {
        self.wake.as_ref().inspect(|w| w.clear());
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        self.wake.as_ref().inspect(|w| w.wake());
    }

    fn bump(&self) {
        self.flags.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// An interrupt (or shutdown): a stopped program must resume to be interrupted.
    pub(crate) fn on_interrupt(&self) {
        if self.lock().phase == Some(Phase::Stopped) {
            self.send(Command::Resume);
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.lock().phase = Some(phase);
    }

    fn phase(state: &State) -> Phase {
        state.phase.unwrap_or(Phase::Idle)
    }

    /// The file a cell is named after while the debugger is on (recorded for `source`); None when off.
    pub(super) fn cell_path(&self, code: &str) -> Option<String> {
        let mut state = self.lock();
        if !state.started {
            return None;
        }
        let path = self.path_for(code);
        state.sources.insert(&path, code);
        let key = canonical(&path);
        let new = !state.executed.contains(&key) && state.running_cell.as_ref() != Some(&key);
        if state.breakpoints.contains_key(&key) && new {
            // Its breakpoints count from now on.
            self.bump();
        }
        if code.contains("function") {
            state.executed.insert(key);
            state.running_cell = None;
        } else {
            state.running_cell = Some(key);
        }
        Some(path)
    }

    fn path_for(&self, code: &str) -> String {
        format!("{}{}.lua", self.tmp_prefix, murmur2(code.as_bytes(), HASH_SEED))
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A DAP response to `request`.
    fn response(&self, request: &Value, result: Result<Value, String>) -> Value {
        let mut r = json!({
            "seq": self.next_seq(),
            "type": "response",
            "request_seq": request["seq"],
            "command": request["command"],
        });
        match result {
            Ok(body) => {
                r["success"] = json!(true);
                r["body"] = body;
            }
            Err(message) => {
                r["success"] = json!(false);
                r["message"] = json!(message);
            }
        }
        r
    }

    /// Publishes a DAP event on iopub.
    pub(super) fn event(&self, publisher: &Publisher, event: &str, body: Value) {
        let parent = self.lock().parent.clone().unwrap_or_default();
        publisher.publish(&parent, "debug_event", self.event_content(event, body));
    }

    /// A DAP request of ours to the client (a reverse request, such as `runInTerminal`).
    pub(crate) fn request_content(&self, command: &str, arguments: Value) -> Value {
        json!({ "seq": self.next_seq(), "type": "request", "command": command, "arguments": arguments })
    }

    /// A DAP event message.
    pub(crate) fn event_content(&self, event: &str, body: Value) -> Value {
        json!({ "seq": self.next_seq(), "type": "event", "event": event, "body": body })
    }

    /// Asks the next line that runs to stop (as `pause` does; `llmspell dap`'s stopOnEntry).
    pub(crate) fn pause_at_start(&self) {
        self.flags.pause.store(true, Ordering::SeqCst);
    }

    fn config(&self) -> DebugConfig {
        let state = self.lock();
        let mut config = DebugConfig {
            break_on_uncaught: state.started
                && state.exception_filters.iter().any(|f| f == "uncaught" || f == "raised"),
            ..DebugConfig::default()
        };
        if state.started {
            for (path, bps) in &state.breakpoints {
                let a_cell =
                    path.starts_with(&self.tmp_prefix) || path.starts_with(&canonical(&self.tmp_prefix));
                if a_cell && !state.executed.contains(path) && state.running_cell.as_ref() != Some(path) {
                    continue;
                }
                let list = bps
                    .iter()
                    .filter_map(|b| {
                        let text = |k: &str| b[k].as_str().map(String::from);
                        Some(Breakpoint {
                            line: b["line"].as_i64()?,
                            condition: text("condition"),
                            hit_condition: text("hitCondition"),
                            log_message: text("logMessage"),
                        })
                    })
                    .collect::<Vec<_>>();
                if !list.is_empty() {
                    config.breakpoints.insert(path.clone(), list);
                }
            }
        }
        config
    }

    /// The control thread's part of a `debug_request`: an answer now, or None once forwarded to the
    /// Lua thread (which replies itself). `events` go out after the answer.
    pub(crate) fn handle(
        &self,
        msg: &Message,
        interrupt: &lua::Interrupter,
        events: &mut Vec<(&'static str, Value)>,
    ) -> Option<Value> {
        let request = &msg.content;
        let command = request["command"].as_str().unwrap_or("");
        let args = &request["arguments"];
        self.lock().parent = Some(msg.clone());
        let result: Result<Value, String> = match command {
            "debugInfo" => Ok(self.debug_info()),
            "initialize" => {
                events.push(("initialized", json!({})));
                Ok(capabilities())
            }
            "attach" | "launch" => {
                let mut state = self.lock();
                state.started = true;
                crate::lua::set_break_on_caught(state.exception_filters.iter().any(|f| f == "raised"));
                drop(state);
                self.bump();
                Ok(json!({}))
            }
            "configurationDone" => Ok(json!({})),
            "dumpCell" => self.dump_cell(args["code"].as_str().unwrap_or("")),
            "setBreakpoints" if args["source"]["path"].as_str().is_none_or(str::is_empty) => {
                Err("setBreakpoints needs arguments.source.path (breakpoints are set by file)".into())
            }
            "setBreakpoints" => Ok(self.set_breakpoints(args, interrupt)),
            "setExceptionBreakpoints" => Ok(self.set_exception_breakpoints(args)),
            "threads" => Ok(json!({ "threads": [{ "id": 1, "name": "main" }] })),
            "source" => self.source(args),
            "disconnect" => Ok(self.disconnect()),
            "pause" => {
                let running = {
                    let state = self.lock();
                    let running = Self::phase(&state) == Phase::Running;
                    self.flags.pause.store(running, Ordering::SeqCst);
                    running
                };
                if running {
                    interrupt.arm_debugger();
                }
                Ok(json!({}))
            }
            "" => Err("a debug request needs a command".into()),
            _ => return self.forward_or_answer(msg, command),
        };
        Some(self.response(request, result))
    }

    /// `setExceptionBreakpoints`: the filters ("raised" stops on caught errors once started).
    fn set_exception_breakpoints(&self, args: &Value) -> Value {
        let filters =
            args["filters"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).map(String::from);
        let mut state = self.lock();
        state.exception_filters = filters.collect();
        crate::lua::set_break_on_caught(
            state.started && state.exception_filters.iter().any(|f| f == "raised"),
        );
        drop(state);
        self.bump();
        json!({})
    }

    /// `disconnect`: no breakpoints, filters or pause left; a stopped program runs on.
    fn disconnect(&self) -> Value {
        let stopped = {
            let mut state = self.lock();
            state.started = false;
            state.breakpoints.clear();
            state.exception_filters.clear();
            crate::lua::set_break_on_caught(false);
            self.flags.pause.store(false, Ordering::SeqCst);
            Self::phase(&state) == Phase::Stopped
        };
        self.bump();
        if stopped {
            self.send(Command::Resume);
        }
        json!({})
    }

    /// Requests that need Lua: forwarded while Lua is idle or stopped; while a cell runs, answered
    /// here as well as can be.
    fn forward_or_answer(&self, msg: &Message, command: &str) -> Option<Value> {
        let request = &msg.content;
        let mut state = self.lock();
        let running = Self::phase(&state) == Phase::Running;
        let known = matches!(
            command,
            "stackTrace"
                | "scopes"
                | "variables"
                | "setVariable"
                | "evaluate"
                | "continue"
                | "next"
                | "stepIn"
                | "stepOut"
                | "inspectVariables"
                | "richInspectVariables"
                | "copyToGlobals"
                | "exceptionInfo"
                | "modules"
        );
        let result = if !known {
            Err(format!("llmspell's debugger does not handle {command:?}"))
        } else if !running && (Self::phase(&state) == Phase::Stopped || !is_resume(command)) {
            state.next_id += 1;
            let id = state.next_id;
            // Queued under the lock: the Lua thread drains the queue after each change of phase.
            self.send(Command::Request { id, msg: Box::new(msg.clone()), request: request.clone() });
            return None;
        } else if is_resume(command) {
            Ok(json!({ "allThreadsContinued": true }))
        } else if command == "inspectVariables" {
            Ok(state.last_variables.clone().unwrap_or_else(|| json!({ "variables": [] })))
        } else {
            Err(format!("{command}: the program is running (pause it first)"))
        };
        drop(state);
        Some(self.response(request, result))
    }

    fn debug_info(&self) -> Value {
        let state = self.lock();
        let breakpoints: Vec<Value> = state
            .breakpoints
            .iter()
            .map(|(path, bps)| json!({ "source": path, "breakpoints": bps }))
            .collect();
        let stopped: Vec<u64> = if Self::phase(&state) == Phase::Stopped { vec![1] } else { vec![] };
        json!({
            "isStarted": state.started,
            "hashMethod": "Murmur2",
            "hashSeed": HASH_SEED,
            "tmpFilePrefix": self.tmp_prefix,
            "tmpFileSuffix": ".lua",
            "breakpoints": breakpoints,
            "stoppedThreads": stopped,
            "richRendering": true,
            "exceptionPaths": [],
            "copyToGlobals": true,
        })
    }

    fn dump_cell(&self, code: &str) -> Result<Value, String> {
        let path = self.path_for(code);
        let dir = Path::new(&self.tmp_prefix);
        crate::private_files::create_private_dir(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        crate::private_files::write_private_atomic(Path::new(&path), code.as_bytes())
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        self.lock().sources.insert(&path, code);
        Ok(json!({ "sourcePath": path }))
    }

    fn set_breakpoints(&self, args: &Value, interrupt: &lua::Interrupter) -> Value {
        let path = args["source"]["path"].as_str().unwrap_or("").to_string();
        let bps: Vec<Value> = args["breakpoints"].as_array().cloned().unwrap_or_default();
        let verified: Vec<Value> = bps
            .iter()
            .map(|b| json!({ "verified": true, "line": b["line"], "source": { "path": path } }))
            .collect();
        let running = {
            let mut state = self.lock();
            let key = canonical(&path);
            if bps.is_empty() {
                state.breakpoints.remove(&key);
            } else {
                state.breakpoints.insert(key, bps);
            }
            Self::phase(&state) == Phase::Running
        };
        self.bump();
        if running && !verified.is_empty() {
            interrupt.arm_debugger();
        }
        json!({ "breakpoints": verified })
    }

    fn source(&self, args: &Value) -> Result<Value, String> {
        let path = args["source"]["path"].as_str().unwrap_or("");
        if let Some(code) = self.lock().sources.get(path) {
            return Ok(json!({ "content": code }));
        }
        // An older cell was written to its file when it left memory.
        std::fs::read_to_string(path)
            .map(|content| json!({ "content": content }))
            .map_err(|e| format!("no source for {path:?}: {e}"))
    }
}

fn is_resume(command: &str) -> bool {
    matches!(command, "continue" | "next" | "stepIn" | "stepOut")
}

/// What this debugger can do, for `initialize`.
fn capabilities() -> Value {
    json!({
        "supportsConfigurationDoneRequest": true,
        "supportsConditionalBreakpoints": true,
        "supportsHitConditionalBreakpoints": true,
        "supportsLogPoints": true,
        "supportsSetVariable": true,
        "supportsEvaluateForHovers": true,
        "supportsExceptionInfoRequest": true,
        "supportsModulesRequest": true,
        "supportsDelayedStackTraceLoading": true,
        "supportsTerminateRequest": false,
        "exceptionBreakpointFilters": [
            { "filter": "uncaught", "label": "Uncaught errors", "default": false },
            { "filter": "raised", "label": "Errors caught by pcall or xpcall", "default": false },
        ],
    })
}

/// A file path as breakpoints and frames name it: absolute, symbolic links resolved when it exists.
pub(crate) fn canonical(path: &str) -> String {
    let p = PathBuf::from(path);
    let absolute = if p.is_absolute() { p } else { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) };
    std::fs::canonicalize(&absolute).unwrap_or(absolute).to_string_lossy().into_owned()
}

/// MurmurHash2 (32-bit, the x86 variant) over bytes: how JupyterLab names a cell's file.
pub(super) fn murmur2(data: &[u8], seed: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = seed ^ data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if tail.len() == 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, arguments: Value) -> Message {
        let content = json!({ "seq": 7, "type": "request", "command": command, "arguments": arguments });
        Message { content, ..Message::default() }
    }

    fn answer(d: &Debugger, command: &str, arguments: Value) -> (Option<Value>, Vec<&'static str>) {
        let mut events = Vec::new();
        let r = d.handle(&request(command, arguments), &lua::Interrupter::default(), &mut events);
        (r, events.into_iter().map(|(e, _)| e).collect())
    }

    #[test]
    fn debug_info_answers_before_initialize_and_cells_are_named_by_their_hash() {
        let d = Debugger::new();
        let (info, _) = answer(&d, "debugInfo", json!({}));
        let body = &info.unwrap()["body"];
        assert_eq!(
            (body["isStarted"].as_bool(), body["hashMethod"].as_str()),
            (Some(false), Some("Murmur2"))
        );
        let (dumped, _) = answer(&d, "dumpCell", json!({ "code": "x = 1" }));
        let path = dumped.unwrap()["body"]["sourcePath"].as_str().unwrap().to_string();
        let want = format!("{}{}.lua", body["tmpFilePrefix"].as_str().unwrap(), murmur2(b"x = 1", HASH_SEED));
        assert_eq!(path, want);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x = 1");
        // Not attached: cells keep their usual name.
        assert_eq!(d.cell_path("x = 1"), None);
        let (_, events) = answer(&d, "initialize", json!({}));
        assert_eq!(events, ["initialized"]);
        answer(&d, "attach", json!({}));
        assert_eq!(d.cell_path("x = 1"), Some(path));
    }

    #[test]
    fn bad_and_unknown_requests_get_unsuccessful_responses_and_running_code_is_not_inspected() {
        let d = Debugger::new();
        let mut events = Vec::new();
        let nameless = Message { content: json!({ "seq": 1 }), ..Message::default() };
        let r = d.handle(&nameless, &lua::Interrupter::default(), &mut events).unwrap();
        assert_eq!(r["success"], false);
        let (r, _) = answer(&d, "setBreakpoints", json!({ "breakpoints": [{ "line": 1 }] }));
        assert!(r.unwrap()["message"].as_str().unwrap().contains("source.path"));
        let (r, _) = answer(&d, "noSuchThing", json!({}));
        let r = r.unwrap();
        assert_eq!((r["success"].as_bool(), r["request_seq"].as_i64()), (Some(false), Some(7)));
        d.set_phase(Phase::Running);
        let (r, _) = answer(&d, "stackTrace", json!({ "threadId": 1 }));
        assert_eq!(r.unwrap()["success"], false);
        let (r, _) = answer(&d, "inspectVariables", json!({}));
        assert_eq!(r.unwrap()["body"], json!({ "variables": [] }));
        let (r, _) = answer(&d, "continue", json!({ "threadId": 1 }));
        assert_eq!(r.unwrap()["success"], true);
    }

    #[test]
    fn breakpoints_in_cells_that_never_ran_are_left_out_of_the_hooks_configuration() {
        let d = Debugger::new();
        answer(&d, "attach", json!({}));
        let (dumped, _) = answer(&d, "dumpCell", json!({ "code": "y = 2" }));
        let path = dumped.unwrap()["body"]["sourcePath"].as_str().unwrap().to_string();
        answer(&d, "setBreakpoints", json!({ "source": { "path": path }, "breakpoints": [{ "line": 1 }] }));
        assert!(d.config().breakpoints.is_empty());
        let before = d.flags.generation.load(Ordering::SeqCst);
        d.cell_path("y = 2");
        assert!(
            d.flags.generation.load(Ordering::SeqCst) > before,
            "the hook must re-read its configuration"
        );
        assert_eq!(d.config().breakpoints.len(), 1);
    }

    #[test]
    fn murmur2_matches_the_reference_values() {
        // MurmurHash2 x86 32-bit reference values (seed 0 and 1).
        assert_eq!(murmur2(b"", 0), 0);
        assert_eq!(murmur2(b"", 1), 0x5bd1_5e36);
        assert_eq!(murmur2(b"a", 0), 0x9268_5f5e);
        // As ipykernel's murmur2_x86 computes them (over UTF-8 bytes).
        assert_eq!(murmur2(b"for i=1,3 do\n  print(i)\nend", 0x4C75_6121), 4_112_626_442);
        assert_eq!(murmur2("h\u{e9}llo".as_bytes(), 7), 775_592_835);
    }
}
