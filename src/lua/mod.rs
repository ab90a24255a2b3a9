//! The Lua interpreter of the session: the only code of the kernel that touches `mlua`. It runs cells, captures output,
//! completes, inspects, judges completeness, renders results, bridges `state` to Lua, and turns the
//! interrupt flag into a Lua error through an instruction-count hook. It talks to the outside world
//! only through the [`Host`] trait, which `kernel.rs` implements.

mod caught;
mod cell_analysis;
mod convert;
mod debug_attach;
mod debug_hook;
mod failure;
mod interrupt;
mod natives;
mod paths;
mod snapshot;
mod source;
mod store;
pub mod syntax;
#[cfg(test)]
mod tests;

pub use caught::set_break_on_caught;
pub use debug_hook::{Breakpoint, DebugConfig, DebugFlags, DebugPort};
pub use failure::{Failure, LUA_ERROR};
pub use interrupt::Interrupter;
pub use paths::lua_path;
pub(crate) use paths::set_package_paths;
/// For `llmspell run` (src/runner): the same `state` natives as the session's.
pub(crate) use store::state_natives;

use crate::state::Store;
use convert::to_json_lenient;
use failure::{interrupted_failure, root_cause, runtime_failure, syntax_failure};
use mlua::{Function, Lua, MultiValue, ObjectLike, Table, Value};
use natives::natives;
use serde_json::Value as Json;
use source::{open_blocks, returning};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// The two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What the client answered to an input request.
pub enum Input {
    /// One line from a line-based frontend (notebook input box, console prompt), without newline.
    Line(String),
    /// A chunk of raw stdin from `llmspell run` (may hold several lines).
    Chunk(String),
    /// The input has ended.
    Eof,
}

/// Why no input arrived.
pub enum InputError {
    Interrupted,
    Failed(String),
}

/// The kernel side the interpreter publishes through while a request runs.
pub trait Host {
    /// Output to stdout/stderr; the host may coalesce it.
    fn write(&mut self, stream: Stream, bytes: &[u8]);
    /// Called now and then while output is pending: a chance to flush aged output. True while some
    /// is still pending.
    fn tick(&mut self) -> bool;
    /// An iopub message of the running request (display_data, clear_output, ...).
    fn publish(&mut self, msg_type: &str, content: Json);
    /// Asks the requesting client for input.
    fn input(&mut self, prompt: &str, password: bool) -> Result<Input, InputError>;
    /// Whether the client answers input line by line (true) or with raw chunks and EOF (false).
    fn line_input(&self) -> bool;
    /// Publishes all output so far, child processes' included (before and after running one).
    fn sync_output(&mut self);
}

pub struct Options {
    /// Bytes Lua may allocate (None: unlimited).
    pub memory_limit: Option<usize>,
    pub state_path: PathBuf,
}

/// The result of running a cell.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The mime bundle of the cell's value, when it has one.
    pub result: Option<Json>,
    pub error: Option<Failure>,
    /// Texts `help()` asked to show in the pager.
    pub pages: Vec<String>,
}

pub enum Completeness {
    Complete,
    Incomplete(String),
    Invalid,
}

/// Memory the kernel may use beyond `--memory-limit` for its own work around a cell.
const MEMORY_HEADROOM: usize = 4 << 20;

/// Per-execution facts the natives and the hook record.
#[derive(Default)]
struct Run {
    pages: Vec<String>,
    interrupted: bool,
}

type SharedHost = Rc<RefCell<Box<dyn Host>>>;

pub struct Interpreter {
    lua: Lua,
    k: Table,
    run: Rc<RefCell<Run>>,
    interrupt: Arc<Interrupter>,
    /// The main Lua state, for its hook.
    main: *mut mlua::ffi::lua_State,
    store: Rc<RefCell<Store>>,
    memory_limit: Option<usize>,
    /// Lua memory in use before any user code: the limit counts from here.
    base_memory: usize,
    /// The debugger's Lua side (debugger.lua), once a debugger is attached.
    debugger: Option<Table>,
    /// The globals the session starts with (not the user's: the debugger's Globals leave them out).
    builtins: Table,
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        // Before the state closes: no other thread may hook it any more.
        self.interrupt.unregister();
        interrupt::set_context(None);
        debug_hook::uninstall();
    }
}

pub fn version() -> &'static str {
    "5.4"
}

impl Interpreter {
    pub fn new(
        host: Box<dyn Host>,
        interrupt: Arc<Interrupter>,
        opts: Options,
    ) -> Result<Interpreter, String> {
        // The full standard library, debug included (tracebacks, help's function locations); mlua
        // calls that "unsafe" because debug can break its invariants, which the kernel tolerates: a
        // broken cell fails, the kernel stays.
        let lua = unsafe {
            Lua::unsafe_new_with(mlua::StdLib::ALL_SAFE | mlua::StdLib::DEBUG, mlua::LuaOptions::default())
        };
        let host: SharedHost = Rc::new(RefCell::new(host));
        let run = Rc::new(RefCell::new(Run::default()));
        let store = Rc::new(RefCell::new(Store::open(opts.state_path.clone())));
        let k = natives(&lua, &host, &run, &store).map_err(|e| format!("cannot set up Lua: {e}"))?;
        let state = state_global(&lua, k.get("state").map_err(|e| e.to_string())?)?;
        k.set("state", state).map_err(|e| e.to_string())?;
        let prelude: Table = lua
            .load(include_str!("prelude.lua"))
            .set_name("=[llmspell]")
            .call(k)
            .map_err(|e| format!("the kernel's Lua prelude failed: {e}"))?;

        // The hook (interrupt.rs): an interrupt becomes an error raised inside the running code;
        // output that has waited is flushed.
        {
            let (flag, run) = (interrupt.clone(), run.clone());
            let stop = Box::new(move || {
                let stop = flag.is_set();
                if stop {
                    if let Ok(mut run) = run.try_borrow_mut() {
                        run.interrupted = true;
                    }
                }
                stop
            });
            let host = host.clone();
            let tick = Box::new(move || match host.try_borrow_mut() {
                Ok(mut h) => h.tick(),
                Err(_) => true,
            });
            interrupt::set_context(Some(interrupt::HookContext { stop, tick }));
            interrupt::guard_debug_sethook(&lua);
            caught::install(&lua);
        }
        // C modules and Lua modules from the platform's directories, as `lua5.4` finds them.
        set_package_paths(&lua, true).map_err(|e| format!("cannot set package paths: {e}"))?;
        let main = lua.exec_raw_lua(|raw| raw.state());
        interrupt.register(main);
        // Generational collection, as the `lua` program itself runs: a cell's young garbage is
        // collected without marking the whole session (the prelude, help texts, the user's
        // globals) again each time; measured with callgrind, a tenth off a no-op request.
        lua.gc_set_mode(mlua::prelude::LuaGcMode::Generational(mlua::prelude::LuaGcGenParams::default()));
        let builtins = lua.create_table().map_err(|e| e.to_string())?;
        for pair in lua.globals().pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            builtins.raw_set(k, v).map_err(|e| e.to_string())?;
        }
        let base_memory = lua.used_memory();
        if let Some(limit) = opts.memory_limit {
            lua.set_memory_limit(base_memory + limit).map_err(|e| format!("cannot limit memory: {e}"))?;
        }
        Ok(Interpreter {
            lua,
            k: prelude,
            run,
            interrupt,
            main,
            store,
            memory_limit: opts.memory_limit,
            base_memory,
            debugger: None,
            builtins,
        })
    }

    /// Runs a cell in the shared session.
    pub fn execute(&mut self, code: &str) -> Outcome {
        self.execute_named(code, None)
    }

    /// Runs a cell whose chunk is named after a file (`path`): the debugger's name for the cell, so
    /// its frames and breakpoints name that file.
    pub fn execute_named(&mut self, code: &str, path: Option<&str>) -> Outcome {
        *self.run.borrow_mut() = Run::default();
        // No hook of ours, whatever the last cell left (an interrupt).
        // SAFETY: our own live main state, on its own thread.
        unsafe { interrupt::clear(self.main) };
        // The debugger's hook, only if breakpoints exist (or a pause is pending).
        let mask = debug_hook::arm_for_cell();
        if mask != 0 {
            // SAFETY: as above.
            unsafe { interrupt::set_everywhere(self.main, mask, debug_hook::ALL_EVENTS, 0) };
        }
        let name = path.map(|p| format!("@{p}")).unwrap_or_else(|| "=[cell]".into());
        let _ = self.k.call_function::<()>("reset_stdin", ());
        let mut outcome = Outcome::default();
        // The memory limit is for user code; the kernel's own work around it (compiling, rendering
        // the result) gets some headroom, so a session whose globals fill the limit can still run
        // the cell that frees them.
        self.set_memory_headroom(true);
        match self.compile(code, &name) {
            Err(failure) => outcome.error = Some(failure),
            Ok(function) => {
                let run: Function = self.k.get("run").expect("the prelude defines run");
                self.set_memory_headroom(false);
                self.interrupt.set_running(true);
                let called: mlua::Result<MultiValue> = run.call(function);
                self.interrupt.set_running(false);
                self.set_memory_headroom(true);
                // Our own work after the cell must not be hit by the interrupt the cell ended with.
                self.interrupt.take();
                // SAFETY: as above.
                unsafe { interrupt::clear(self.main) };
                let run = std::mem::take(&mut *self.run.borrow_mut());
                outcome.pages = run.pages;
                match called {
                    Ok(values) => self.finish(values, run.interrupted, &mut outcome),
                    Err(e) => outcome.error = Some(self.failure_of_error(&e, run.interrupted)),
                }
            }
        }
        // A cell may have stopped the collector; the next one should not inherit that.
        self.lua.gc_restart();
        if outcome.error.is_some() && self.memory_limit.is_some() {
            // A failed cell's garbage is old by now, and the generational collector leaves old
            // garbage for its next major cycle: under a memory limit the next cell needs that
            // memory back now (a runaway allocation may have filled the limit).
            let _ = self.lua.gc_collect();
        }
        let flushed = self.store.borrow_mut().flush();
        if let Err(e) = flushed {
            // Reported as lost, so lost: a later cell must not write them behind the user's back.
            self.store.borrow_mut().discard_pending();
            outcome.error.get_or_insert(Failure {
                ename: "StateError".into(),
                evalue: format!("state changes of this cell were not saved: {e}"),
                traceback: vec![format!("StateError: state changes of this cell were not saved: {e}")],
            });
        }
        outcome
    }

    fn set_memory_headroom(&self, on: bool) {
        if let Some(limit) = self.memory_limit {
            let extra = if on { MEMORY_HEADROOM } else { 0 };
            let _ = self.lua.set_memory_limit(self.base_memory + limit + extra);
        }
    }

    fn finish(&self, values: MultiValue, interrupted: bool, outcome: &mut Outcome) {
        let mut values = values.into_iter();
        let ok = matches!(values.next(), Some(Value::Boolean(true)));
        if ok {
            let n = match values.next() {
                Some(Value::Integer(n)) => n as usize,
                _ => 0,
            };
            if n > 0 {
                let results: MultiValue = values.take(n).collect();
                match self.k.call_function::<MultiValue>("bundle", results) {
                    Ok(b) => {
                        outcome.result =
                            b.into_iter().next().filter(|t| !t.is_nil()).map(|t| to_json_lenient(&t, 0))
                    }
                    Err(e) => outcome.error = Some(self.failure_of_error(&e, false)),
                }
            }
            return;
        }
        let err = values.next().unwrap_or(Value::Nil);
        let tb = values.next().and_then(|v| v.as_string().map(|s| s.to_string_lossy())).unwrap_or_default();
        outcome.error = Some(self.failure_of_value(err, &tb, interrupted));
    }

    fn failure_of_value(&self, err: Value, tb: &str, interrupted: bool) -> Failure {
        if let Value::Error(e) = &err {
            return self.failure_of_error(e, interrupted);
        }
        if interrupted {
            return interrupted_failure();
        }
        // evalue shows the value itself (a table's fields); the traceback is what lua would print.
        let evalue = self
            .k
            .call_function::<String>("describe_error", err.clone())
            .unwrap_or_else(|_| "(error object could not be shown)".into());
        if evalue == "not enough memory" {
            return self.memory_failure();
        }
        let (message, with_traceback) = self
            .k
            .call_function::<(String, bool)>("lua_message", err)
            .unwrap_or_else(|_| (evalue.clone(), true));
        runtime_failure(evalue, &message, if with_traceback { tb } else { "" })
    }

    fn memory_failure(&self) -> Failure {
        let limit = self.memory_limit.map(|l| format!(" (the kernel's memory limit is {} MB)", l >> 20));
        let evalue = format!("not enough memory{}", limit.unwrap_or_default());
        Failure { ename: LUA_ERROR.into(), traceback: vec![evalue.clone()], evalue }
    }

    fn failure_of_error(&self, e: &mlua::Error, interrupted: bool) -> Failure {
        if interrupted {
            return interrupted_failure();
        }
        match root_cause(e) {
            mlua::Error::MemoryError(_) => self.memory_failure(),
            mlua::Error::SyntaxError { message, .. } => syntax_failure(message),
            mlua::Error::RuntimeError(m) => {
                let (message, tb) = m.split_once("\nstack traceback:").unwrap_or((m, ""));
                let tb = if tb.is_empty() { String::new() } else { format!("stack traceback:{tb}") };
                runtime_failure(message.to_string(), message, &tb)
            }
            other => runtime_failure(other.to_string(), &other.to_string(), ""),
        }
    }

    /// Compiles a cell. In the session an expression list (or a cell whose last line is one) is
    /// compiled to return its values, so they can be shown; so are the values of an explicit `return`.
    fn compile(&self, code: &str, name: &str) -> Result<Function, Failure> {
        let lua = &self.lua;
        let chunk = |src: &str| lua.load(src.to_string()).set_name(name).into_function();
        // A cell that starts with a statement keyword cannot be an expression: skip that try.
        let first_word = code.trim_start().split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next();
        let statement = matches!(
            first_word,
            Some(
                "local" | "function" | "for" | "while" | "if" | "repeat" | "do" | "return" | "goto" | "break"
            )
        );
        if !statement {
            if let Some(f) = returning(code).iter().find_map(|src| chunk(src).ok()) {
                return Ok(f);
            }
        }
        let plain = chunk(code);
        if plain.is_ok() {
            return plain.map_err(|e| self.failure_of_error(&e, false));
        }
        // `t = {} \n t` is not valid Lua as it stands; read a last line that is an expression on its
        // own as the cell's value. (Only when the cell fails as written: `a = b \n -1` is one
        // statement, and `... \n end` must not become `return end`.)
        let trimmed = code.trim_end();
        if let Some(pos) = trimmed.rfind('\n') {
            let (head, last) = trimmed.split_at(pos + 1);
            if chunk(&format!("return {last}")).is_ok() {
                if let Some(f) = returning(last).iter().find_map(|src| chunk(&format!("{head}{src}")).ok()) {
                    return Ok(f);
                }
            }
        }
        plain.map_err(|e| self.failure_of_error(&e, false))
    }

    /// For a script (`llmspell dap`): `arg` as `lua SCRIPT ARGS...` sets it, and an `os.exit` that ends
    /// the script with its code (the session's refuses, as it would end the kernel).
    pub fn set_script_args(&mut self, script: &str, args: &[String]) -> Result<(), String> {
        let fail = |e: mlua::Error| format!("cannot set up the script: {e}");
        let arg = self.lua.create_table().map_err(fail)?;
        arg.raw_set(0, script).map_err(fail)?;
        for (i, a) in args.iter().enumerate() {
            arg.raw_set(i + 1, a.as_str()).map_err(fail)?;
        }
        self.lua.globals().set("arg", arg).map_err(fail)?;
        let exit = r#"os.exit = function(code)
  if code == nil or code == true then code = 0 elseif code == false then code = 1 end
  error("llmspell dap: os.exit " .. math.tointeger(code), 0)
end"#;
        self.lua.load(exit).set_name("=[llmspell]").exec().map_err(fail)
    }

    /// The session's globals and state keys for editors (`snapshot.rs`), between cells.
    pub fn live_snapshot(&mut self) -> Json {
        let keys = self.store.borrow().known_keys(None);
        snapshot::take(&self.lua.globals(), &self.builtins, keys)
    }

    /// Whether a global is unset (nil): `exit` means "leave" only while nobody defined it.
    pub fn global_is_nil(&self, name: &str) -> bool {
        self.lua.globals().get::<Value>(name).map(|v| v.is_nil()).unwrap_or(false)
    }

    /// Evaluates an expression for `user_expressions`: its mime bundle.
    pub fn evaluate(&mut self, expr: &str) -> Result<Json, Failure> {
        let f = self
            .lua
            .load(format!("return {expr}"))
            .set_name("=[expression]")
            .into_function()
            .map_err(|e| self.failure_of_error(&e, false))?;
        let values: MultiValue = f.call(()).map_err(|e| self.failure_of_error(&e, false))?;
        let b: MultiValue =
            self.k.call_function("bundle", values).map_err(|e| self.failure_of_error(&e, false))?;
        Ok(b.into_iter().next().map(|t| to_json_lenient(&t, 0)).unwrap_or(Json::Null))
    }

    /// Completion at a byte offset: matches, and the byte range they replace. The session's own
    /// answer first (live values, metatables); the analysis adds what only the code says (the cell's
    /// locals, required modules' members) and state keys in `state.get("`.
    pub fn complete(&mut self, code: &str, cursor: usize) -> (Vec<String>, usize, usize) {
        let mut cursor = cursor.min(code.len());
        while !code.is_char_boundary(cursor) {
            cursor -= 1;
        }
        let world = self.cell_world();
        if let Some((keys, start)) = cell_analysis::state_keys(code, cursor, &world) {
            return (keys, start, cursor);
        }
        let (mut matches, len) =
            self.k.call_function::<(Vec<String>, usize)>("complete", &code[..cursor]).unwrap_or_default();
        if len == 0 {
            return (matches, cursor, cursor);
        }
        let start = cursor - len.min(cursor);
        matches.extend(cell_analysis::matches(code, cursor, start, &world));
        matches.sort();
        matches.dedup();
        (matches, start, cursor)
    }

    /// What the analysis sees beyond a cell: the session's `package.path` and its state keys.
    fn cell_world(&self) -> cell_analysis::CellWorld {
        let package: Option<Table> = self.lua.globals().get("package").ok();
        let path = package.and_then(|p| p.get::<String>("path").ok()).unwrap_or_default();
        cell_analysis::CellWorld::new(&path, self.store.borrow().known_keys(None))
    }

    /// Documentation for the name under (or just before) the cursor.
    pub fn inspect(&mut self, code: &str, cursor: usize) -> Option<String> {
        let mut cursor = cursor.min(code.len());
        while !code.is_char_boundary(cursor) {
            cursor -= 1;
        }
        let name = name_around(code, cursor);
        if !name.is_empty() {
            if let Some(doc) = self.k.call_function::<Option<String>>("inspect_name", name).ok().flatten() {
                return Some(doc);
            }
        }
        // Inside a call's parentheses (`string.format(x, |`): the function being called, as
        // IPython's tooltip shows it.
        let open = enclosing_call(code, cursor);
        let callee = open.map(|open| name_around(code, code[..open].trim_end().len())).unwrap_or_default();
        if !callee.is_empty() {
            if let Some(doc) = self.k.call_function::<Option<String>>("inspect_name", callee).ok().flatten() {
                return Some(doc);
            }
        }
        // What only the code says: a function of this cell or of a required module, with its doc comment.
        let world = self.cell_world();
        let at = if name.is_empty() && !callee.is_empty() {
            open.map_or(cursor, |o| code[..o].trim_end().len())
        } else {
            cursor
        };
        cell_analysis::inspect(code, at, &world)
    }

    /// Lua's own parser decides: incomplete means "more input could fix it".
    pub fn is_complete(&mut self, code: &str) -> Completeness {
        if code.trim().is_empty() {
            return Completeness::Complete;
        }
        let compiles = |src: String| self.lua.load(src).into_function();
        let unfinished = |r: &mlua::Result<Function>| {
            matches!(r, Err(mlua::Error::SyntaxError { incomplete_input: true, .. }))
        };
        let expression = compiles(format!("return {code}"));
        if expression.is_ok() {
            return Completeness::Complete;
        }
        let statement = compiles(code.to_string());
        if statement.is_ok() {
            return Completeness::Complete;
        }
        // `1 +` is an unfinished expression (as `lua -i` reads it), not an invalid statement.
        if unfinished(&statement) || unfinished(&expression) {
            return Completeness::Incomplete("  ".repeat(open_blocks(code).max(1)));
        }
        Completeness::Invalid
    }
}

/// The dotted name (`string.format`, `obj:method`) the cursor is in or just after.
fn name_around(code: &str, cursor: usize) -> &str {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == ':';
    let start = code[..cursor]
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_name(c))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let end = code[cursor..].find(|c: char| !is_name(c)).map(|i| cursor + i).unwrap_or(code.len());
    code[start..end].trim_matches(|c| c == '.' || c == ':')
}

/// The byte index of the `(` left open before the cursor, if the cursor is inside a call.
fn enclosing_call(code: &str, cursor: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code[..cursor].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return Some(i),
            '(' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The `state` global over the store's natives (`state.lua`), as the session and runs share it.
pub(crate) fn state_global(lua: &Lua, natives: Table) -> Result<Table, String> {
    lua.load(include_str!("state.lua"))
        .set_name("=[llmspell]")
        .call(natives)
        .map_err(|e| format!("the state wrappers failed: {e}"))
}
