//! The Lua interpreter: the only code that touches `mlua`. It runs cells and scripts, captures output,
//! completes, inspects, judges completeness, renders results, bridges `state` to Lua, and turns the
//! interrupt flag into a Lua error through an instruction-count hook. It talks to the outside world
//! only through the [`Host`] trait, which `kernel.rs` implements.

use crate::state::{StateError, Store};
use base64::Engine;
use mlua::{Function, HookTriggers, Lua, LuaString, MultiValue, ObjectLike, Table, Value, Variadic, VmState};
use serde_json::Value as Json;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Called every few thousand Lua instructions: a chance to flush aged output.
    fn tick(&mut self);
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

/// A script run by `llmspell run`: its own fresh globals, `arg`, and a real `os.exit`.
pub struct Script {
    pub name: String,
    pub args: Vec<String>,
}

/// A failed cell, as Jupyter reports it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

/// The result of running a cell.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The mime bundle of the cell's value, when it has one.
    pub result: Option<Json>,
    pub error: Option<Failure>,
    /// Texts `help()` asked to show in the pager.
    pub pages: Vec<String>,
    /// Set when a script called `os.exit(code)`.
    pub exit_code: Option<i32>,
}

pub enum Completeness {
    Complete,
    Incomplete(String),
    Invalid,
}

/// Instructions between two looks at the interrupt flag: ~10 µs of Lua, so interrupts land well
/// within a millisecond, at a cost too small to measure.
const HOOK_INSTRUCTIONS: u32 = 1000;
/// Memory the kernel may use beyond `--memory-limit` for its own work around a cell.
const MEMORY_HEADROOM: usize = 4 << 20;

/// Per-execution facts the natives and the hook record.
#[derive(Default)]
struct Run {
    pages: Vec<String>,
    exit_code: Option<i32>,
    interrupted: bool,
}

type SharedHost = Rc<RefCell<Box<dyn Host>>>;

pub struct Interpreter {
    lua: Lua,
    k: Table,
    run: Rc<RefCell<Run>>,
    interrupt: Arc<AtomicBool>,
    exiting: Rc<Cell<bool>>,
    store: Rc<RefCell<Store>>,
    memory_limit: Option<usize>,
    /// Lua memory in use before any user code: the limit counts from here.
    base_memory: usize,
}

pub fn version() -> &'static str {
    "5.4"
}

impl Interpreter {
    pub fn new(
        host: Box<dyn Host>,
        interrupt: Arc<AtomicBool>,
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
        let exiting = Rc::new(Cell::new(false));
        let store = Rc::new(RefCell::new(Store::open(opts.state_path.clone())));
        let k = natives(&lua, &interrupt, &host, &run, &exiting, &store)
            .map_err(|e| format!("cannot set up Lua: {e}"))?;
        let prelude: Table = lua
            .load(include_str!("prelude.lua"))
            .set_name("=[llmspell]")
            .call(k)
            .map_err(|e| format!("the kernel's Lua prelude failed: {e}"))?;

        // The hook: interrupts and os.exit become errors raised inside the running code; output that
        // has waited too long is flushed. The flags stay set until the cell ends, so a pcall that
        // catches the error is interrupted again at once.
        {
            let interrupt = interrupt.clone();
            let host = host.clone();
            let run = run.clone();
            let exiting = exiting.clone();
            lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS), move |_, _| {
                if interrupt.load(Ordering::Relaxed) {
                    run.borrow_mut().interrupted = true;
                    return Err(mlua::Error::runtime("Interrupted"));
                }
                if exiting.get() {
                    return Err(mlua::Error::runtime("os.exit"));
                }
                if let Ok(mut h) = host.try_borrow_mut() {
                    h.tick();
                }
                Ok(VmState::Continue)
            })
            .map_err(|e| format!("cannot install the interrupt hook: {e}"))?;
        }
        // Generational collection, as the `lua` program itself runs: a cell's young garbage is
        // collected without marking the whole session (the prelude, help texts, the user's
        // globals) again each time; measured with callgrind, a tenth off a no-op request.
        lua.gc_set_mode(mlua::prelude::LuaGcMode::Generational(mlua::prelude::LuaGcGenParams::default()));
        let base_memory = lua.used_memory();
        if let Some(limit) = opts.memory_limit {
            lua.set_memory_limit(base_memory + limit).map_err(|e| format!("cannot limit memory: {e}"))?;
        }
        Ok(Interpreter {
            lua,
            k: prelude,
            run,
            interrupt,
            exiting,
            store,
            memory_limit: opts.memory_limit,
            base_memory,
        })
    }

    /// Runs a cell in the shared session, or a script in a fresh environment.
    pub fn execute(&mut self, code: &str, script: Option<&Script>) -> Outcome {
        *self.run.borrow_mut() = Run::default();
        self.exiting.set(false);
        let _ = self.k.call_function::<()>("reset_stdin", ());
        let mut outcome = Outcome::default();
        // The memory limit is for user code; the kernel's own work around it (compiling, rendering
        // the result) gets some headroom, so a session whose globals fill the limit can still run
        // the cell that frees them.
        self.set_memory_headroom(true);
        match self.compile(code, script) {
            Err(failure) => outcome.error = Some(failure),
            Ok(function) => {
                let args: Vec<String> = script.map(|s| s.args.clone()).unwrap_or_default();
                let run: Function = self.k.get("run").expect("the prelude defines run");
                self.set_memory_headroom(false);
                let called: mlua::Result<MultiValue> = run.call((function, Variadic::from_iter(args)));
                self.set_memory_headroom(true);
                // Our own work after the cell must not be hit by the interrupt the cell ended with.
                self.interrupt.store(false, Ordering::SeqCst);
                let run = std::mem::take(&mut *self.run.borrow_mut());
                outcome.pages = run.pages;
                outcome.exit_code = run.exit_code;
                match called {
                    Ok(values) => self.finish(values, script.is_none(), run.interrupted, &mut outcome),
                    Err(e) => outcome.error = Some(self.failure_of_error(&e, run.interrupted)),
                }
            }
        }
        self.exiting.set(false);
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

    fn finish(&self, values: MultiValue, show: bool, interrupted: bool, outcome: &mut Outcome) {
        let mut values = values.into_iter();
        let ok = matches!(values.next(), Some(Value::Boolean(true)));
        if ok {
            let n = match values.next() {
                Some(Value::Integer(n)) => n as usize,
                _ => 0,
            };
            if show && n > 0 {
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
        if outcome.exit_code.is_some() {
            return; // os.exit in a script: not an error, the exit code says it all
        }
        outcome.error = Some(self.failure_of_value(err, &tb, interrupted));
    }

    fn failure_of_value(&self, err: Value, tb: &str, interrupted: bool) -> Failure {
        if let Value::Error(e) = &err {
            return self.failure_of_error(e, interrupted);
        }
        let message = self
            .k
            .call_function::<String>("describe_error", err)
            .unwrap_or_else(|_| "(error object could not be shown)".into());
        if interrupted {
            return interrupted_failure();
        }
        if message == "not enough memory" {
            return self.memory_failure();
        }
        let mut traceback = vec![format!("RuntimeError: {message}")];
        traceback.extend(clean_traceback(tb));
        Failure { ename: "RuntimeError".into(), evalue: message, traceback }
    }

    fn memory_failure(&self) -> Failure {
        let limit = self.memory_limit.map(|l| format!(" (the kernel's memory limit is {} MB)", l >> 20));
        let evalue = format!("not enough memory{}", limit.unwrap_or_default());
        Failure { ename: "MemoryError".into(), traceback: vec![format!("MemoryError: {evalue}")], evalue }
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
                let mut traceback = vec![format!("RuntimeError: {message}")];
                traceback.extend(clean_traceback(tb));
                Failure { ename: "RuntimeError".into(), evalue: message.to_string(), traceback }
            }
            other => {
                let evalue = other.to_string();
                Failure {
                    ename: "RuntimeError".into(),
                    traceback: vec![format!("RuntimeError: {evalue}")],
                    evalue,
                }
            }
        }
    }

    /// Compiles a cell. In the session an expression list (or a cell whose last line is one) is
    /// compiled to return its values, so they can be shown; so are the values of an explicit `return`.
    fn compile(&self, code: &str, script: Option<&Script>) -> Result<Function, Failure> {
        let lua = &self.lua;
        if let Some(s) = script {
            let env: Table = self
                .k
                .call_function("script_env", (s.name.as_str(), s.args.clone()))
                .map_err(|e| self.failure_of_error(&e, false))?;
            let code = code
                .strip_prefix("#!")
                .map(|rest| rest.find('\n').map(|i| &rest[i..]).unwrap_or(""))
                .unwrap_or(code);
            return lua
                .load(code)
                .set_name(format!("@{}", s.name))
                .set_environment(env)
                .into_function()
                .map_err(|e| self.failure_of_error(&e, false));
        }
        let chunk = |src: &str| lua.load(src.to_string()).set_name("=[cell]").into_function();
        // A cell that starts with a statement keyword cannot be an expression: skip that try.
        let first_word = code.trim_start().split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next();
        let statement = matches!(
            first_word,
            Some(
                "local" | "function" | "for" | "while" | "if" | "repeat" | "do" | "return" | "goto" | "break"
            )
        );
        if !statement {
            if let Ok(f) = chunk(&returning(code)) {
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
                if let Ok(f) = chunk(&format!("{head}{}", returning(last))) {
                    return Ok(f);
                }
            }
        }
        plain.map_err(|e| self.failure_of_error(&e, false))
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

    /// Completion at a byte offset: matches, and the byte range they replace.
    pub fn complete(&mut self, code: &str, cursor: usize) -> (Vec<String>, usize, usize) {
        let before = &code[..cursor.min(code.len())];
        match self.k.call_function::<(Vec<String>, usize)>("complete", before) {
            Ok((matches, len)) => (matches, cursor - len.min(cursor), cursor),
            Err(_) => (Vec::new(), cursor, cursor),
        }
    }

    /// Documentation for the name under (or just before) the cursor.
    pub fn inspect(&mut self, code: &str, cursor: usize) -> Option<String> {
        let cursor = cursor.min(code.len());
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == ':';
        let start = code[..cursor]
            .char_indices()
            .rev()
            .find(|&(_, c)| !is_name(c))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let end = code[cursor..].find(|c: char| !is_name(c)).map(|i| cursor + i).unwrap_or(code.len());
        let name = code[start..end].trim_matches(|c| c == '.' || c == ':');
        if name.is_empty() {
            return None;
        }
        self.k.call_function::<Option<String>>("inspect_name", name).ok().flatten()
    }

    /// Lua's own parser decides: incomplete means "more input could fix it".
    pub fn is_complete(&mut self, code: &str) -> Completeness {
        if code.trim().is_empty() {
            return Completeness::Complete;
        }
        let compiles = |src: String| self.lua.load(src).into_function();
        if compiles(format!("return {code}")).is_ok() {
            return Completeness::Complete;
        }
        match compiles(code.to_string()) {
            Ok(_) => Completeness::Complete,
            Err(mlua::Error::SyntaxError { incomplete_input: true, .. }) => {
                Completeness::Incomplete("  ".repeat(open_blocks(code).max(1)))
            }
            Err(_) => Completeness::Invalid,
        }
    }
}

/// `return <exprs>` without making the last call a tail call (which would drop its frame from
/// tracebacks and error positions): the values pass through an identity function instead. The
/// newline keeps a trailing `-- comment` from swallowing the parenthesis.
fn returning(exprs: &str) -> String {
    format!("return (function(...) return ... end)({exprs}\n)")
}

fn interrupted_failure() -> Failure {
    Failure {
        ename: "Interrupted".into(),
        evalue: "execution interrupted".into(),
        traceback: vec!["Interrupted: execution interrupted".into()],
    }
}

fn syntax_failure(message: &str) -> Failure {
    let message = message.trim_start_matches("syntax error: ").to_string();
    Failure {
        ename: "SyntaxError".into(),
        traceback: vec![format!("SyntaxError: {message}")],
        evalue: message,
    }
}

fn root_cause(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_cause(cause),
        mlua::Error::WithContext { cause, .. } => root_cause(cause),
        other => other,
    }
}

/// The traceback lines a user cares about: not the kernel's own frames.
fn clean_traceback(tb: &str) -> Vec<String> {
    let lines: Vec<String> = tb
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.contains("[llmspell]")
                && !l.contains("[C]: in ?")
                && !l.contains("function 'xpcall'")
        })
        .filter(|l| !l.contains("[C]: in function 'error'") && !l.contains("in upvalue 'xpcall'"))
        .filter(|l| !l.contains("(...tail calls...)") && !l.contains("[C]: in upvalue 'f'"))
        .map(|l| l.replace('\t', "  "))
        .collect();
    if lines.len() <= 1 {
        Vec::new() // only the "stack traceback:" header is left
    } else {
        lines
    }
}

/// How many blocks are open at the end of `code`: a hint for the next line's indent.
fn open_blocks(code: &str) -> usize {
    let mut depth: i64 = 0;
    for word in code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || "{}()".contains(c))) {
        for token in split_brackets(word) {
            match token {
                "do" | "then" | "repeat" | "function" | "{" | "(" => depth += 1,
                "end" | "until" | "}" | ")" | "elseif" => depth -= 1,
                _ => {}
            }
        }
    }
    // `while x do` and `for ... do` count once through `do`; `if x then` once through `then`.
    depth.max(0) as usize
}

fn split_brackets(word: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in word.char_indices() {
        if "{}()".contains(c) {
            if start < i {
                out.push(&word[start..i]);
            }
            out.push(&word[i..i + 1]);
            start = i + 1;
        }
    }
    if start < word.len() {
        out.push(&word[start..]);
    }
    out
}

/// The natives table `K` the prelude builds on.
fn natives(
    lua: &Lua,
    interrupt: &Arc<AtomicBool>,
    host: &SharedHost,
    run: &Rc<RefCell<Run>>,
    exiting: &Rc<Cell<bool>>,
    store: &Rc<RefCell<Store>>,
) -> mlua::Result<Table> {
    let k = lua.create_table()?;
    let tostring: Function = lua.globals().get("tostring")?;

    // print: tab-separated tostring of each argument, as the standard print does.
    {
        let host = host.clone();
        let tostring = tostring.clone();
        k.set(
            "print",
            lua.create_function(move |_, args: Variadic<Value>| {
                let mut line = Vec::with_capacity(32);
                for (i, v) in args.iter().enumerate() {
                    if i > 0 {
                        line.push(b'\t');
                    }
                    append_text(&mut line, v, &tostring)?;
                }
                line.push(b'\n');
                host.borrow_mut().write(Stream::Stdout, &line);
                Ok(())
            })?,
        )?;
    }
    // write(stream, ...): strings and numbers, as file:write takes them.
    {
        let host = host.clone();
        k.set(
            "write",
            lua.create_function(move |lua, (stream, args): (i64, Variadic<Value>)| {
                let mut out = Vec::new();
                for (i, v) in args.iter().enumerate() {
                    match v {
                        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
                        Value::Integer(_) | Value::Number(_) => {
                            if let Some(s) = lua.coerce_string(v.clone())? {
                                out.extend_from_slice(&s.as_bytes());
                            }
                        }
                        other => {
                            return Err(mlua::Error::runtime(format!(
                                "bad argument #{} to 'write' (string expected, got {})",
                                i + 1,
                                other.type_name()
                            )))
                        }
                    }
                }
                let stream = if stream == 2 { Stream::Stderr } else { Stream::Stdout };
                host.borrow_mut().write(stream, &out);
                Ok(())
            })?,
        )?;
    }
    {
        let host = host.clone();
        k.set(
            "publish",
            lua.create_function(move |_, (msg_type, content): (String, Value)| {
                let content = to_json_lenient(&content, 0);
                host.borrow_mut().publish(&msg_type, content);
                Ok(())
            })?,
        )?;
    }
    {
        let host = host.clone();
        let run = run.clone();
        k.set(
            "input",
            lua.create_function(move |_, prompt: String| {
                let answer = host.borrow_mut().input(&prompt, false);
                Ok(match answer {
                    Ok(Input::Line(s)) => ("line", Some(s)),
                    Ok(Input::Chunk(s)) => ("chunk", Some(s)),
                    Ok(Input::Eof) => ("eof", None),
                    Err(InputError::Interrupted) => {
                        run.borrow_mut().interrupted = true;
                        return Err(mlua::Error::runtime("Interrupted"));
                    }
                    Err(InputError::Failed(why)) => ("error", Some(why)),
                })
            })?,
        )?;
    }
    {
        let host = host.clone();
        k.set("line_input", lua.create_function(move |_, ()| Ok(host.borrow().line_input()))?)?;
    }
    {
        let host = host.clone();
        k.set(
            "sync_output",
            lua.create_function(move |_, ()| {
                host.borrow_mut().sync_output();
                Ok(())
            })?,
        )?;
    }
    {
        let run = run.clone();
        k.set(
            "page",
            lua.create_function(move |_, text: String| {
                run.borrow_mut().pages.push(text);
                Ok(())
            })?,
        )?;
    }
    {
        let run = run.clone();
        let exiting = exiting.clone();
        k.set(
            "exiting",
            lua.create_function(move |_, code: i64| {
                run.borrow_mut().exit_code = Some(code.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
                exiting.set(true);
                Ok(())
            })?,
        )?;
    }
    {
        let interrupt = interrupt.clone();
        let exiting = exiting.clone();
        k.set(
            "stopping",
            lua.create_function(move |_, ()| Ok(interrupt.load(Ordering::Relaxed) || exiting.get()))?,
        )?;
    }
    k.set(
        "base64",
        lua.create_function(|_, bytes: LuaString| {
            Ok(base64::engine::general_purpose::STANDARD.encode(&*bytes.as_bytes()))
        })?,
    )?;
    k.set("session_id", crate::wire::random_hex(6))?;
    let docs: Table = lua.load(include_str!("lua_docs.lua")).set_name("=[llmspell docs]").call(())?;
    k.set("docs", docs)?;
    k.set("state", state_natives(lua, store)?)?;
    Ok(k)
}

fn append_text(out: &mut Vec<u8>, v: &Value, tostring: &Function) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        other => {
            let s: LuaString = tostring.call(other.clone())?;
            out.extend_from_slice(&s.as_bytes());
        }
    }
    Ok(())
}

/// Why a `state` native failed: a message the prelude raises at the caller's line, or a Lua error
/// (from the function given to `state.update`) passed on as it is.
enum NativeError {
    Message(String),
    Lua(mlua::Error),
}

impl From<StateError> for NativeError {
    fn from(e: StateError) -> Self {
        NativeError::Message(e.to_string())
    }
}

impl From<String> for NativeError {
    fn from(m: String) -> Self {
        NativeError::Message(m)
    }
}

/// A native returning `true, value` or `false, message`.
fn checked<A: mlua::FromLuaMulti>(
    lua: &Lua,
    store: &Rc<RefCell<Store>>,
    f: impl Fn(&Lua, &mut Store, A) -> Result<Value, NativeError> + 'static,
) -> mlua::Result<Function> {
    let store = store.clone();
    lua.create_function(move |lua, args: A| match f(lua, &mut store.borrow_mut(), args) {
        Ok(v) => Ok((true, v)),
        Err(NativeError::Message(m)) => Ok((false, Value::String(lua.create_string(m)?))),
        Err(NativeError::Lua(e)) => Err(e),
    })
}

/// The `state` natives; the prelude wraps them so failures are errors at the caller's line.
fn state_natives(lua: &Lua, store: &Rc<RefCell<Store>>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "set",
        checked(lua, store, |_, store, (key, value): (Value, Value)| {
            let key = key_of(&key)?;
            if value.is_nil() {
                store.delete(&key)?;
            } else {
                let json = to_json_strict(&value, "value", &mut Vec::new())
                    .map_err(|m| format!("key {key:?}: {m}"))?;
                store.set(&key, json)?;
            }
            Ok(Value::Nil)
        })?,
    )?;
    t.set(
        "get",
        checked(lua, store, |lua, store, (key, default): (Value, Value)| {
            match store.get(&key_of(&key)?)? {
                Some(v) => from_json(lua, &v).map_err(NativeError::Lua),
                None => Ok(default),
            }
        })?,
    )?;
    t.set(
        "delete",
        checked(lua, store, |_, store, key: Value| Ok(Value::Boolean(store.delete(&key_of(&key)?)?)))?,
    )?;
    t.set(
        "keys",
        checked(lua, store, |lua, store, prefix: Option<String>| {
            let keys = store.keys(prefix.as_deref())?;
            lua.create_sequence_from(keys).map(Value::Table).map_err(NativeError::Lua)
        })?,
    )?;
    t.set(
        "clear",
        checked(lua, store, |_, store, ()| {
            store.clear()?;
            Ok(Value::Nil)
        })?,
    )?;
    t.set(
        "update",
        checked(lua, store, |lua, store, (key, f): (Value, Function)| {
            let key = key_of(&key)?;
            // Runs under the store's cross-process lock: `f` should be quick (other kernels wait).
            let new = store.update(&key, |old| -> Result<Option<Json>, NativeError> {
                let old = match old {
                    Some(v) => from_json(lua, &v).map_err(NativeError::Lua)?,
                    None => Value::Nil,
                };
                let new: Value = f.call(old).map_err(NativeError::Lua)?;
                if new.is_nil() {
                    return Ok(None);
                }
                let json = to_json_strict(&new, "value", &mut Vec::new()).map_err(|m| {
                    format!("key {key:?}: the function returned something that cannot be stored: {m}")
                })?;
                Ok(Some(json))
            })?;
            match new {
                Some(v) => from_json(lua, &v).map_err(NativeError::Lua),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(t)
}

fn key_of(key: &Value) -> Result<String, String> {
    match key {
        Value::String(s) => match s.to_str() {
            Ok(k) => Ok(k.to_string()),
            Err(_) => Err("keys must be UTF-8 text".into()),
        },
        other => Err(format!("keys must be strings, got {}", other.type_name())),
    }
}

/// Strings that are not UTF-8 are stored as `{"$base64": "..."}` so arbitrary bytes round-trip.
const BYTES_TAG: &str = "$base64";
const MAX_DEPTH: usize = 100;

/// Lua value to JSON for `state`: refuses what would not come back as it went in, naming the path.
fn to_json_strict(v: &Value, path: &str, seen: &mut Vec<*const std::ffi::c_void>) -> Result<Json, String> {
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::Number(f) => {
            if !f.is_finite() {
                return Err(format!("{path} is {f} (only finite numbers can be stored)"));
            }
            serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .ok_or(format!("{path} is not a storable number"))?
        }
        Value::String(s) => match s.to_str() {
            Ok(text) => Json::String(text.to_string()),
            Err(_) => {
                serde_json::json!({ BYTES_TAG: base64::engine::general_purpose::STANDARD.encode(&*s.as_bytes()) })
            }
        },
        Value::Table(t) => {
            let ptr = t.to_pointer();
            if seen.contains(&ptr) {
                return Err(format!("{path} refers back to a table that contains it (a cycle)"));
            }
            if seen.len() >= MAX_DEPTH {
                return Err(format!("{path} is nested more than {MAX_DEPTH} levels deep"));
            }
            seen.push(ptr);
            let result = table_to_json_strict(t, path, seen);
            seen.pop();
            result?
        }
        other => return Err(format!("{path} is a {}", other.type_name())),
    })
}

fn table_to_json_strict(
    t: &Table,
    path: &str,
    seen: &mut Vec<*const std::ffi::c_void>,
) -> Result<Json, String> {
    let len = t.raw_len();
    let mut array = Vec::with_capacity(len);
    let mut map = serde_json::Map::new();
    let mut count = 0usize;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{path} cannot be read: {e}"))?;
        count += 1;
        match &k {
            Value::String(s) => {
                let key =
                    s.to_str().map_err(|_| format!("{path} has a key that is not UTF-8 text"))?.to_string();
                let child =
                    if is_identifier(&key) { format!("{path}.{key}") } else { format!("{path}[{key:?}]") };
                map.insert(key, to_json_strict(&v, &child, seen)?);
            }
            Value::Integer(i) if *i >= 1 && (*i as usize) <= len => {}
            other => {
                return Err(format!(
                    "{path} has the key {} (only arrays 1..n and string keys can be stored)",
                    match other {
                        Value::Integer(i) => i.to_string(),
                        Value::Number(f) => f.to_string(),
                        o => o.type_name().to_string(),
                    }
                ))
            }
        }
    }
    if !map.is_empty() && count > map.len() {
        return Err(format!("{path} mixes array items and string keys"));
    }
    if !map.is_empty() {
        if map.len() == 1 && map.contains_key(BYTES_TAG) {
            return Err(format!("{path} uses the reserved key {BYTES_TAG:?}"));
        }
        return Ok(Json::Object(map));
    }
    for i in 1..=len {
        let v: Value = t.raw_get(i).map_err(|e| format!("{path}[{i}] cannot be read: {e}"))?;
        if v.is_nil() {
            return Err(format!("{path}[{i}] is nil (arrays with holes cannot be stored)"));
        }
        array.push(to_json_strict(&v, &format!("{path}[{i}]"), seen)?);
    }
    Ok(Json::Array(array))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// JSON to Lua: integers stay integers, floats floats, tagged bytes become strings.
fn from_json(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, from_json(lua, item)?)?;
            }
            Value::Table(t)
        }
        Json::Object(map) => {
            if let (1, Some(Json::String(b64))) = (map.len(), map.get(BYTES_TAG)) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    return Ok(Value::String(lua.create_string(bytes)?));
                }
            }
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), from_json(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Lua value to JSON for messages (display data, metadata): never fails, shows what it cannot map.
fn to_json_lenient(v: &Value, depth: usize) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::Number(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) if depth < MAX_DEPTH => {
            let len = t.raw_len();
            let only_array = t
                .clone()
                .pairs::<Value, Value>()
                .flatten()
                .all(|(k, _)| matches!(k, Value::Integer(i) if i >= 1 && i as usize <= len));
            if len > 0 && only_array {
                Json::Array(
                    (1..=len)
                        .map(|i| to_json_lenient(&t.raw_get(i).unwrap_or(Value::Nil), depth + 1))
                        .collect(),
                )
            } else {
                let mut map = serde_json::Map::new();
                for (k, val) in t.clone().pairs::<Value, Value>().flatten() {
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        other => to_json_lenient(other, depth + 1).to_string(),
                    };
                    map.insert(key, to_json_lenient(&val, depth + 1));
                }
                Json::Object(map)
            }
        }
        other => Json::String(format!("<{}>", other.type_name())),
    }
}
