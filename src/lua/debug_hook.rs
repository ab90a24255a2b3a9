//! The debugger's hook logic on the Lua thread: when a line hook is needed, whether a line stops, and
//! stopping (the Lua thread then serves debug requests inside the hook until the client resumes).
//!
//! Cost: with no breakpoints and no stepping, no hook is set at all (the same hook function as
//! interrupts, `interrupt.rs`, which dispatches call/return/line events here). With breakpoints, a
//! call hook decides per function: the line hook is on only while the running function's source and
//! line range hold a breakpoint, and the return hook only below such a function (to turn its line
//! events back on). Breakpoints in cells that never ran are not given to the hook at all (the kernel
//! leaves them out). Stepping and pausing turn every event on.
//!
//! The protocol side (requests, replies, events) is the kernel's, behind [`DebugPort`]; what a stopped
//! program looks like (frames, variables, evaluation) is `debugger.lua`'s.

use mlua::ffi::{self, lua_Debug, lua_State, LUA_MASKCALL, LUA_MASKLINE, LUA_MASKRET};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

extern "C" {
    /// src/lua/c/threads.c: whether a coroutine is alive.
    fn llmspell_thread_listed(l: *mut c_void) -> c_int;
}

/// One source breakpoint, as the client set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakpoint {
    pub line: i64,
    pub condition: Option<String>,
    pub hit_condition: Option<String>,
    pub log_message: Option<String>,
}

/// What the client asked for, as the Lua thread reads it.
#[derive(Debug, Clone, Default)]
pub struct DebugConfig {
    /// Breakpoints by canonical file path.
    pub breakpoints: HashMap<String, Vec<Breakpoint>>,
    /// Stop when an error leaves the cell ("uncaught" exception filter).
    pub break_on_uncaught: bool,
}

/// What the hook looks at on every event, without a lock.
#[derive(Default)]
pub struct DebugFlags {
    /// Bumped whenever the configuration changes: the hook re-reads it then.
    pub generation: AtomicU64,
    /// A pause was asked for (the hook clears it when it stops).
    pub pause: AtomicBool,
}

/// The kernel's side of the debugger, as the Lua thread needs it.
pub trait DebugPort {
    fn flags(&self) -> Arc<DebugFlags>;
    fn config(&self) -> DebugConfig;
    /// The program stops: from now on requests that need Lua come to [`DebugPort::next_command`].
    fn stopped(&self, reason: &str, text: Option<&str>);
    /// The next request for the stopped program (blocks): `{id, command, arguments}`; `__resume`
    /// when it must resume at once (an interrupt, the kernel shutting down).
    fn next_command(&self) -> Json;
    /// The answer to a request `next_command` gave: a body (JSON text) or an error message.
    fn respond(&self, id: u64, ok: bool, body_or_message: &str);
    /// The program runs again (how: the resuming command).
    fn resumed(&self, how: &str);
    /// A logpoint's message.
    fn output(&self, text: &str);
    /// The canonical form of a file path (breakpoints and frames name files by it).
    fn canonical(&self, path: &str) -> String;
}

/// Where the Lua side's entry point is kept, in the registry.
pub(super) const ENTER_KEY: &CStr = c"llmspell.debug_enter";

#[derive(Clone, Copy, PartialEq)]
enum StepKind {
    Into,
    Over,
    Out,
}

#[derive(Clone, Copy)]
struct Step {
    kind: StepKind,
    thread: *mut lua_State,
    depth: usize,
}

/// One chunk source (`@path`) the hook has seen, and the lines of its breakpoints. Keyed by the
/// address and length of Lua's string; the bytes are compared too, since a collected string's
/// address may be reused.
struct SourceEntry {
    address: usize,
    source: Box<[u8]>,
    /// Breakpoint lines in this source (empty: none).
    lines: Rc<[i64]>,
}

const SOURCE_CACHE: usize = 64;

struct Runtime {
    port: Rc<dyn DebugPort>,
    flags: Arc<DebugFlags>,
    generation: u64,
    config: DebugConfig,
    /// Chunk source (`@path`) to canonical path.
    paths: HashMap<Vec<u8>, Rc<str>>,
    /// Direct-mapped: the call and return hooks ask about the same few sources over and over.
    sources: Vec<Option<SourceEntry>>,
    /// Hits per breakpoint (path, line), for hit conditions; reset when breakpoints change.
    hits: HashMap<(Rc<str>, i64), u64>,
    step: Option<Step>,
    pausing: bool,
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Attaches the kernel's debugger port to this (the Lua) thread.
pub(super) fn install(port: Rc<dyn DebugPort>) {
    RUNTIME.with(|r| {
        *r.borrow_mut() = Some(Runtime {
            flags: port.flags(),
            port,
            generation: u64::MAX,
            config: DebugConfig::default(),
            paths: HashMap::new(),
            sources: (0..SOURCE_CACHE).map(|_| None).collect(),
            hits: HashMap::new(),
            step: None,
            pausing: false,
        })
    });
}

pub(super) fn uninstall() {
    RUNTIME.with(|r| *r.borrow_mut() = None);
}

fn with_runtime<R>(f: impl FnOnce(&mut Runtime) -> R) -> Option<R> {
    RUNTIME.with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.as_mut().map(f)))
}

pub(super) fn port() -> Option<Rc<dyn DebugPort>> {
    with_runtime(|rt| rt.port.clone())
}

impl Runtime {
    fn refresh(&mut self) {
        let generation = self.flags.generation.load(Ordering::Relaxed);
        if generation != self.generation {
            self.generation = generation;
            self.config = self.port.config();
            self.hits.clear();
            self.sources.iter_mut().for_each(|e| *e = None);
        }
    }

    fn path_of(&mut self, source: &[u8]) -> Option<Rc<str>> {
        let file = source.strip_prefix(b"@")?;
        if let Some(p) = self.paths.get(source) {
            return Some(p.clone());
        }
        let canonical: Rc<str> = self.port.canonical(&String::from_utf8_lossy(file)).into();
        self.paths.insert(source.to_vec(), canonical.clone());
        Some(canonical)
    }

    /// The breakpoint lines of a chunk source (from the cache when it was seen before).
    unsafe fn lines_of(&mut self, source: *const std::os::raw::c_char, len: usize) -> Rc<[i64]> {
        let address = source as usize;
        let bytes = std::slice::from_raw_parts(source as *const u8, len);
        let slot = (address >> 4) % SOURCE_CACHE;
        if let Some(e) = &self.sources[slot] {
            if e.address == address && *e.source == *bytes {
                return e.lines.clone();
            }
        }
        let path = self.path_of(bytes);
        let lines: Rc<[i64]> = match path.as_ref().and_then(|p| self.config.breakpoints.get(&**p)) {
            Some(bps) => bps.iter().map(|b| b.line).collect(),
            None => Rc::from([]),
        };
        self.sources[slot] = Some(SourceEntry { address, source: bytes.into(), lines: lines.clone() });
        lines
    }

    /// Whether the function at `level` of `l` holds a breakpoint in its line range.
    unsafe fn function_has_breakpoint(&mut self, l: *mut lua_State, level: c_int) -> bool {
        let mut ar: lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, level, &mut ar) == 0 || ffi::lua_getinfo(l, c"S".as_ptr(), &mut ar) == 0 {
            return false;
        }
        if ar.source.is_null() {
            return false;
        }
        let lines = self.lines_of(ar.source, ar.srclen);
        let (first, last) = (ar.linedefined as i64, ar.lastlinedefined as i64);
        // The main chunk (linedefined 0) spans the whole file.
        lines.iter().any(|&line| first == 0 || (line >= first && line <= last))
    }

    /// The hook events the function at `level` of `l` needs.
    unsafe fn mask_for(&mut self, l: *mut lua_State, level: c_int) -> c_int {
        self.refresh();
        if self.port_pause() || self.step.is_some() || self.pausing {
            return LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE;
        }
        if self.config.breakpoints.is_empty() {
            return 0;
        }
        if self.function_has_breakpoint(l, level) {
            LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE
        } else {
            // The return event only matters below a function that needs lines: see `on_event`.
            LUA_MASKCALL
        }
    }

    fn port_pause(&mut self) -> bool {
        if self.flags.pause.load(Ordering::Relaxed) && self.flags.pause.swap(false, Ordering::SeqCst) {
            self.pausing = true;
        }
        self.pausing
    }
}

/// The hook events the debugger wants now for the function running on `l` (0: none).
///
/// # Safety
/// `l` must be the live Lua state running on this thread.
pub(super) unsafe fn wanted_mask(l: *mut lua_State) -> c_int {
    with_runtime(|rt| rt.mask_for(l, 0)).unwrap_or(0)
}

/// Every event the debugger can want: a coroutine's hook starts with these (its next event narrows it).
pub(super) const ALL_EVENTS: c_int = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE;

/// Before a cell runs: a fresh start (no stepping left from the last cell). Returns the mask the
/// main thread's hook needs (0: no breakpoints, no pause); the caller sets it on every Lua thread
/// (`interrupt::set_everywhere`: the one hook function is the interrupter's).
pub(super) fn arm_for_cell() -> c_int {
    with_runtime(|rt| {
        rt.step = None;
        rt.pausing = false;
        rt.refresh();
        if rt.port_pause() {
            ALL_EVENTS
        } else if rt.config.breakpoints.is_empty() {
            0
        } else {
            // The cell's own call event decides its line events; a suspended coroutine may sit in a
            // function with breakpoints, so those start with every event (their next one narrows it).
            LUA_MASKCALL
        }
    })
    .unwrap_or(0)
}

fn stack_depth(l: *mut lua_State) -> usize {
    let mut depth = 0;
    // SAFETY: reading the stack of the live state the hook runs on.
    unsafe {
        let mut ar: lua_Debug = std::mem::zeroed();
        while ffi::lua_getstack(l, depth as c_int, &mut ar) != 0 {
            depth += 1;
        }
    }
    depth
}

/// What a line does.
enum LineAction {
    Nothing,
    Stop(&'static str),
    /// A breakpoint to check: its path and line (conditions are evaluated by the Lua side).
    Check(Rc<str>, Breakpoint),
}

/// A call, return or line event (interrupt.rs has handled interrupts and output already). Returns
/// the mask the thread should have afterwards.
///
/// # Safety
/// Called from the hook with its state and debug record.
pub(super) unsafe fn on_event(l: *mut lua_State, ar: *mut lua_Debug) -> c_int {
    // Once a function that needs line events calls others, the return events stay on (on this
    // thread, for the rest of the cell) so that returning to it turns its line events back on.
    // Until then only calls are watched: half the events of call-heavy code.
    let current = ffi::lua_gethookmask(l);
    let sticky = if current & (LUA_MASKLINE | LUA_MASKRET) != 0 { LUA_MASKRET } else { 0 };
    let with_sticky = |mask: c_int| if mask == 0 { 0 } else { mask | sticky };
    let event = (*ar).event;
    if event == ffi::LUA_HOOKLINE {
        line_event(l, ar);
        return with_sticky(with_runtime(|rt| rt.mask_for(l, 0)).unwrap_or(0));
    }
    if event == ffi::LUA_HOOKRET {
        // Leaving a coroutine while stepping over or out of it, by returning from its body or by
        // a yield (or an error) that returns to its resumer here: the next line anywhere.
        with_runtime(|rt| {
            if let Some(step) = &mut rt.step {
                let left = if step.thread == l {
                    stack_depth(l) <= 1
                } else {
                    // SAFETY: a listed coroutine is alive; its status is read on the thread that
                    // runs every coroutine of this state.
                    llmspell_thread_listed(step.thread as *mut c_void) != 0
                        && ffi::lua_status(step.thread) != ffi::LUA_OK
                };
                if left && step.kind != StepKind::Into {
                    step.kind = StepKind::Into;
                }
            }
        });
        // Level 1: the function returned to.
        return with_sticky(with_runtime(|rt| rt.mask_for(l, 1)).unwrap_or(0));
    }
    with_sticky(with_runtime(|rt| rt.mask_for(l, 0)).unwrap_or(0))
}

unsafe fn line_event(l: *mut lua_State, ar: *mut lua_Debug) {
    if ffi::lua_getinfo(l, c"Sl".as_ptr(), ar) == 0 || (*ar).source.is_null() {
        return;
    }
    let source = CStr::from_ptr((*ar).source).to_bytes();
    // The kernel's own Lua (the prelude that runs the cell) is not the user's to stop in.
    if source.starts_with(b"=[llmspell") {
        return;
    }
    let action = with_runtime(|rt| {
        rt.refresh();
        if rt.port_pause() {
            return LineAction::Stop("pause");
        }
        if let Some(step) = rt.step {
            let here = || stack_depth(l);
            let stop = match step.kind {
                StepKind::Into => true,
                StepKind::Over => step.thread == l && here() <= step.depth,
                StepKind::Out => step.thread == l && here() < step.depth,
            };
            if stop {
                return LineAction::Stop("step");
            }
        }
        if rt.config.breakpoints.is_empty() {
            return LineAction::Nothing;
        }
        let line = (*ar).currentline as i64;
        if !rt.lines_of((*ar).source, (*ar).srclen).contains(&line) {
            return LineAction::Nothing;
        }
        let Some(path) = rt.path_of(source) else {
            return LineAction::Nothing;
        };
        match rt.config.breakpoints.get(&*path).and_then(|bps| bps.iter().find(|b| b.line == line)) {
            Some(bp) => LineAction::Check(path, bp.clone()),
            None => LineAction::Nothing,
        }
    })
    .unwrap_or(LineAction::Nothing);
    match action {
        LineAction::Nothing => {}
        LineAction::Stop(reason) => stop(l, reason, None),
        LineAction::Check(path, bp) => breakpoint_reached(l, path, bp),
    }
}

/// A breakpoint's line is reached: its condition, hit count and log message decide.
unsafe fn breakpoint_reached(l: *mut lua_State, path: Rc<str>, bp: Breakpoint) {
    if let Some(cond) = bp.condition.as_deref().filter(|c| !c.trim().is_empty()) {
        if call_enter(l, "condition", cond).is_none_or(|r| r != "true") {
            return;
        }
    }
    let hits = with_runtime(|rt| {
        let n = rt.hits.entry((path.clone(), bp.line)).or_insert(0);
        *n += 1;
        *n
    })
    .unwrap_or(1);
    if let Some(hc) = bp.hit_condition.as_deref().filter(|c| !c.trim().is_empty()) {
        if !hit_condition_met(hc, hits) {
            return;
        }
    }
    if let Some(message) = &bp.log_message {
        if let Some(text) = call_enter(l, "log", message) {
            if let Some(port) = port() {
                port.output(&format!("{text}\n"));
            }
        }
        return;
    }
    stop(l, "breakpoint", None);
}

/// DAP hit conditions, as editors write them: `N`, `== N`, `>= N`, `> N`, `% N`.
pub(super) fn hit_condition_met(condition: &str, hits: u64) -> bool {
    let c = condition.trim();
    let (op, number) = ["==", ">=", "<=", ">", "<", "%", "="]
        .iter()
        .find_map(|op| c.strip_prefix(op).map(|rest| (*op, rest.trim())))
        .unwrap_or(("", c));
    let Ok(n) = number.parse::<u64>() else { return true };
    match op {
        ">=" => hits >= n,
        "<=" => hits <= n,
        ">" => hits > n,
        "<" => hits < n,
        "%" => n != 0 && hits.is_multiple_of(n),
        _ => hits == n,
    }
}

/// Stops on `l`: the Lua side serves requests until the client resumes; then how it resumed decides
/// the stepping.
///
/// # Safety
/// Called from the hook with its state.
pub(super) unsafe fn stop(l: *mut lua_State, reason: &str, text: Option<&str>) {
    let Some(port) = port() else { return };
    port.stopped(reason, text);
    let how = call_enter(l, "stop", text.unwrap_or("")).unwrap_or_else(|| "continue".into());
    with_runtime(|rt| {
        rt.pausing = false;
        let depth = stack_depth(l);
        rt.step = match how.as_str() {
            "next" => Some(Step { kind: StepKind::Over, thread: l, depth }),
            "stepIn" => Some(Step { kind: StepKind::Into, thread: l, depth }),
            "stepOut" => Some(Step { kind: StepKind::Out, thread: l, depth }),
            _ => None,
        };
    });
    port.resumed(&how);
}

/// Calls the Lua side's `enter(kind, text)` on `l`, protected: its result as text (a boolean as
/// "true"/"false"), None if it failed.
unsafe fn call_enter(l: *mut lua_State, kind: &str, text: &str) -> Option<String> {
    if ffi::lua_checkstack(l, 4) == 0 {
        return None;
    }
    let top = ffi::lua_gettop(l);
    ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, ENTER_KEY.as_ptr());
    let kind = CString::new(kind).ok()?;
    ffi::lua_pushstring(l, kind.as_ptr());
    ffi::lua_pushlstring(l, text.as_ptr() as *const _, text.len());
    let status = ffi::lua_pcall(l, 2, 1, 0);
    let result = if status == ffi::LUA_OK {
        match ffi::lua_type(l, -1) {
            ffi::LUA_TBOOLEAN => Some(if ffi::lua_toboolean(l, -1) != 0 { "true" } else { "false" }.into()),
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, -1, &mut len);
                Some(String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len)).into_owned())
            }
            _ => None,
        }
    } else {
        None
    };
    ffi::lua_settop(l, top);
    result
}

#[cfg(test)]
mod tests {
    use super::hit_condition_met;

    #[test]
    fn hit_conditions_read_as_editors_write_them() {
        assert!(hit_condition_met("3", 3) && !hit_condition_met("3", 2));
        assert!(hit_condition_met(">= 2", 2) && !hit_condition_met(">=2", 1));
        assert!(hit_condition_met("% 2", 4) && !hit_condition_met("%2", 3));
        assert!(hit_condition_met("> 1", 2) && hit_condition_met("== 5", 5));
        assert!(hit_condition_met("nonsense", 1));
    }
}
