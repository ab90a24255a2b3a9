//! The interpreter driven through a fake [`Host`]: what a cell shows, how it fails, what is complete,
//! what `state` stores. No sockets, no kernel.

use super::*;
use std::cell::RefCell;
use std::rc::Rc;

type Shared<T> = Rc<RefCell<Vec<T>>>;

/// Records what the interpreter sends; answers input from a script of lines.
#[derive(Clone, Default)]
struct FakeHost {
    out: Shared<(Stream, Vec<u8>)>,
    published: Shared<(String, Json)>,
    lines: Shared<String>,
}

impl FakeHost {
    fn stdout(&self) -> String {
        let out = self.out.borrow_mut();
        let bytes: Vec<u8> =
            out.iter().filter(|(s, _)| *s == Stream::Stdout).flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8(bytes).unwrap()
    }
}

impl Host for FakeHost {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        self.out.borrow_mut().push((stream, bytes.to_vec()));
    }
    fn tick(&mut self) -> bool {
        false
    }
    fn publish(&mut self, msg_type: &str, content: Json) {
        self.published.borrow_mut().push((msg_type.to_string(), content));
    }
    fn input(&mut self, _prompt: &str, _password: bool) -> Result<Input, InputError> {
        let mut lines = self.lines.borrow_mut();
        if lines.is_empty() {
            Ok(Input::Eof)
        } else {
            Ok(Input::Line(lines.remove(0)))
        }
    }
    fn line_input(&self) -> bool {
        true
    }
    fn sync_output(&mut self) {}
}

fn interpreter() -> (Interpreter, FakeHost) {
    let host = FakeHost::default();
    let dir = std::env::temp_dir().join(format!(
        "llmspell-lua-unit-{}-{}",
        std::process::id(),
        crate::wire::random_hex(4)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Options { memory_limit: None, state_path: dir.join("state.json") };
    let interp = Interpreter::new(Box::new(host.clone()), Arc::default(), opts).unwrap();
    (interp, host)
}

fn shown(outcome: &Outcome) -> Option<String> {
    outcome.result.as_ref().and_then(|r| r["text/plain"].as_str().map(String::from))
}

#[test]
fn an_expression_cell_shows_its_values_and_a_statement_cell_none() {
    let (mut i, _) = interpreter();
    assert_eq!(shown(&i.execute("1 + 1")).as_deref(), Some("2"));
    assert_eq!(shown(&i.execute("x = 41")), None);
    assert_eq!(shown(&i.execute("x + 1")).as_deref(), Some("42"));
    assert_eq!(
        shown(&i.execute("t = {1, 2}\nt[2]")).as_deref(),
        Some("2"),
        "a last line that is an expression"
    );
    assert_eq!(shown(&i.execute("return 'a', 3")).as_deref(), Some("\"a\"\t3"));
    assert_eq!(shown(&i.execute("{a = 1}")).as_deref(), Some("{a = 1}"));
}

#[test]
fn terminal_text_is_the_best_there_is() {
    let (mut i, host) = interpreter();
    // A cell whose value is the file io.write returned shows only what it wrote.
    let o = i.execute("io.write('abc')");
    assert_eq!((shown(&o), host.stdout()), (None, "abc".to_string()));
    // A long sequence says what it leaves out.
    let o = i.execute("local t = {} for k = 1, 250 do t[k] = k end return t");
    let text = shown(&o).unwrap();
    assert!(
        text.contains(" 200,") && text.trim_end_matches(['}', '\n', ' ']).ends_with("…(+50 more)"),
        "{text}"
    );
    assert!(!text.contains(", 201,"), "{text}");
    // HTML shows its text in a terminal; the HTML itself is still there for notebooks.
    let o = i.execute("display.html('<b>bold</b> &amp; <i>more</i>')");
    let r = o.result.unwrap();
    assert_eq!(
        (r["text/plain"].as_str(), r["text/html"].as_str()),
        (Some("bold & more"), Some("<b>bold</b> &amp; <i>more</i>"))
    );
}

#[test]
fn print_goes_to_the_host_as_stdout() {
    let (mut i, host) = interpreter();
    let o = i.execute("print('hi', 1, nil) io.write('x', 2)");
    assert!(o.error.is_none(), "{:?}", o.error);
    assert_eq!(host.stdout(), "hi\t1\tnil\nx2");
}

#[test]
fn errors_carry_their_kind_message_and_the_users_frames_only() {
    let (mut i, _) = interpreter();
    let e = i.execute("local function f() error('boom') end\nf()").error.unwrap();
    assert_eq!(e.ename, "LuaError");
    assert_eq!(e.evalue, "[cell]:1: boom");
    assert!(
        e.traceback.iter().any(|l| l.contains("in local 'f'") || l.contains("in function 'f'")),
        "{:?}",
        e.traceback
    );
    assert!(!e.traceback.iter().any(|l| l.contains("[llmspell]")), "{:?}", e.traceback);
    let e = i.execute("1 +").error.unwrap();
    assert_eq!((e.ename.as_str(), e.traceback.len()), ("LuaError", 1), "a syntax error has no stack: {e:?}");
    let e = i.execute("error({code = 7})").error.unwrap();
    assert_eq!(e.ename, "LuaError");
}

#[test]
fn a_cells_traceback_is_what_lua_prints_for_the_same_uncaught_error() {
    let (mut i, _) = interpreter();
    let e = i.execute("local function f() error('boom') end\nf()").error.unwrap();
    let tb = [
        "[cell]:1: boom",
        "stack traceback:",
        "\t[C]: in function 'error'",
        "\t[cell]:1: in local 'f'",
        "\t[cell]:2: in main chunk",
        "\t[C]: in ?",
    ];
    assert_eq!(e.traceback, tb);
    // A value without text of its own is named by its type (evalue still shows it); one whose
    // __tostring gives text is that text alone, as lua.c's message handler does.
    let e = i.execute("error({code = 7})").error.unwrap();
    assert_eq!(e.traceback[0], "(error object is a table value)");
    assert!(e.evalue.contains("code = 7"), "{e:?}");
    let e =
        i.execute("error(setmetatable({}, {__tostring = function() return 'custom' end}))").error.unwrap();
    assert_eq!(e.traceback, ["custom"]);
    let e = i.execute("error('x', 0)").error.unwrap();
    assert_eq!(e.traceback[..2], ["x", "stack traceback:"]);
    let e = i.execute("error(42)").error.unwrap();
    assert_eq!(e.traceback[0], "42");
}

#[test]
fn completeness_follows_the_lua_parser() {
    let (mut i, _) = interpreter();
    assert!(matches!(i.is_complete("x = 1"), Completeness::Complete));
    assert!(matches!(i.is_complete("for i = 1, 3 do"), Completeness::Incomplete(ref s) if s == "  "));
    assert!(
        matches!(i.is_complete("if a then\n while b do"), Completeness::Incomplete(ref s) if s == "    ")
    );
    assert!(matches!(i.is_complete("x = = 1"), Completeness::Invalid));
    assert!(matches!(i.is_complete("1 +"), Completeness::Incomplete(_)), "an unfinished expression");
    assert!(matches!(i.is_complete("print(1,"), Completeness::Incomplete(_)));
    assert!(matches!(i.is_complete("  "), Completeness::Complete));
}

#[test]
fn completion_replaces_the_word_before_the_cursor() {
    let (mut i, _) = interpreter();
    i.execute("my_value = 1");
    let (matches, start, end) = i.complete("x = my_v", 8);
    assert_eq!((start, end), (4, 8));
    assert!(matches.contains(&"my_value".to_string()), "{matches:?}");
    let (matches, _, _) = i.complete("string.fo", 9);
    assert!(matches.contains(&"string.format".to_string()), "{matches:?}");
}

#[test]
fn completion_knows_what_the_code_being_typed_declares_and_hides_metamethods() {
    let (mut i, _) = interpreter();
    let complete = |i: &mut Interpreter, code: &str| i.complete(code, code.len()).0;
    let m = complete(&mut i, "local greeting = 'hi'\nlocal count = 3\nprint(gre");
    assert_eq!(m, vec!["greeting"]);
    let m = complete(&mut i, "local greeting = 'hi'\ngreeting:up");
    assert_eq!(m, vec!["greeting:upper"]);
    let m = complete(&mut i, "local point = { x = 1, y = 2, label = 'p' }\npoint.");
    assert_eq!(m, vec!["point.label", "point.x", "point.y"]);
    let m = complete(&mut i, "local s = require('string')\ns.for");
    assert_eq!(m, vec!["s.format"]);
    let m = complete(&mut i, "function area(width, height) return wid");
    assert_eq!(m, vec!["width"]);
    let m = complete(&mut i, "for index, value in ipairs(t) do print(val");
    assert_eq!(m, vec!["value"]);
    let m = complete(&mut i, "io.stdout:");
    assert!(!m.is_empty() && m.iter().all(|c| !c.contains(":__")), "{m:?}");
    assert_eq!(complete(&mut i, "io.stdout:__ind"), vec!["io.stdout:__index"]);
}

#[test]
fn completion_and_inspect_add_what_only_the_code_says() {
    // One engine: the analysis of `llmspell lsp` adds, to what the session knows, the members of a
    // module the cell requires (never run), a function's doc comment, and state keys.
    let (mut i, _) = interpreter();
    let dir = std::env::temp_dir().join(format!("llmspell-cell-mod-{}", crate::wire::random_hex(4)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cellmod.lua"),
        "local M = {}\n---Only the file knows.\nfunction M.only_in_module(x) return x end\nreturn M\n",
    )
    .unwrap();
    let o = i.execute(&format!(
        "package.path = '{}/?.lua;' .. package.path\nstate.set('alpha_key', 1)",
        dir.display()
    ));
    assert!(o.error.is_none(), "{:?}", o.error);
    let code = "local h = require('cellmod')\nh.only_";
    assert_eq!(
        i.complete(code, code.len()),
        (vec!["h.only_in_module".to_string()], code.len() - 7, code.len())
    );
    let code = "local h = require('cellmod')\nh.only_in_module";
    let doc = i.inspect(code, code.len()).unwrap_or_default();
    assert!(doc.contains("Only the file knows."), "{doc}");
    let code = "---Adds one to x.\nlocal function inc(x) return x + 1 end\nprint(inc(";
    let doc = i.inspect(code, code.len()).unwrap_or_default();
    assert!(doc.contains("Adds one to x.") && doc.contains("inc(x)"), "{doc}");
    let code = "print(state.get(\"al";
    assert_eq!(i.complete(code, code.len()), (vec!["alpha_key".to_string()], code.len() - 2, code.len()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_error_in_an_expression_cell_names_the_line_it_is_on() {
    let (mut i, _) = interpreter();
    for (code, line) in [("nosuch.x", 1), ("1 + nil", 1), ("x = 1\nnosuch.y", 2), ("1 + {} -- a comment", 1)]
    {
        let e = i.execute(code).error.unwrap_or_else(|| panic!("{code}: no error"));
        assert!(e.evalue.starts_with(&format!("[cell]:{line}:")), "{code}: {}", e.evalue);
    }
    assert_eq!(shown(&i.execute("1, 2 -- two")).as_deref(), Some("1\t2"));
}

#[test]
fn state_round_trips_values_and_refuses_what_would_not_come_back() {
    let (mut i, _) = interpreter();
    let o = i.execute("state.set('k', {1, 2, {a = 'b'}, 1.5}) return state.get('k')[3].a, state.get('k')[4]");
    assert!(o.error.is_none(), "{:?}", o.error);
    assert_eq!(shown(&o).as_deref(), Some("\"b\"\t1.5"));
    let e = i.execute("state.set('bad', {print})").error.unwrap();
    assert!(e.evalue.contains("value[1] is a function"), "{}", e.evalue);
    let e = i.execute("local t = {} t.t = t state.set('cycle', t)").error.unwrap();
    assert!(e.evalue.contains("cycle"), "{}", e.evalue);
    let o = i.execute("state.set('bytes', '\\xff\\x00') return #state.get('bytes')");
    assert_eq!(shown(&o).as_deref(), Some("2"), "{:?}", o.error);
}

/// Aborts the test process if dropped later than two minutes from now: an interrupt that is lost
/// would otherwise hang the suite (and CI) instead of failing it.
struct HangGuard(std::sync::Arc<std::sync::atomic::AtomicBool>);

fn hang_guard(what: &str) -> HangGuard {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, what) = (done.clone(), what.to_string());
    std::thread::spawn(move || {
        for _ in 0..1200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if seen.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        eprintln!("{what}: the interrupt did not stop it within 120 s; aborting the test run");
        std::process::abort();
    });
    HangGuard(done)
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_interrupt_stops_a_loop_even_one_that_catches_errors() {
    let _guard = hang_guard("a pcall loop");
    let (mut i, _) = interpreter();
    let flag = i.interrupt.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        flag.interrupt();
    });
    let o = i.execute("while true do pcall(function() while true do end end) end");
    t.join().unwrap();
    assert_eq!(o.error.map(|e| e.ename).as_deref(), Some("Interrupted"));
    assert_eq!(shown(&i.execute("1")).as_deref(), Some("1"), "the session goes on");
}

/// Runs `code`, interrupting it from another thread once it has started (it sets `started`).
fn interrupted(code: &str) -> Outcome {
    let _guard = hang_guard(code);
    let (mut i, _) = interpreter();
    let started = std::env::temp_dir().join(format!("llmspell-started-{}", crate::wire::random_hex(6)));
    let flag = i.interrupt.clone();
    let watch = started.clone();
    let t = std::thread::spawn(move || {
        while !watch.exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        flag.interrupt();
    });
    let code = format!("io.open({:?}, 'w'):close() {code}", started.display().to_string());
    let o = i.execute(&code);
    t.join().unwrap();
    let _ = std::fs::remove_file(&started);
    assert_eq!(shown(&i.execute("1")).as_deref(), Some("1"), "the session goes on");
    o
}

#[test]
fn interrupts_stop_loops_in_coroutines_around_child_processes_and_after_user_hooks() {
    for code in [
        "coroutine.wrap(function() while true do end end)()",
        "local co = coroutine.create(function() while true do end end) while true do coroutine.resume(co) end",
        "while true do os.execute('sleep 0.05') end",
        "debug.sethook() while true do end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
    ] {
        let o = interrupted(code);
        assert_eq!(o.error.map(|e| e.ename).as_deref(), Some("Interrupted"), "{code}");
    }
}

#[test]
fn one_interrupt_stops_code_that_keeps_removing_hooks() {
    // Each debug.sethook() removes whatever hook is set, the interrupt's too if it lands in there:
    // the interrupt sets it again until the code stops.
    for _ in 0..20 {
        let o = interrupted("while true do debug.sethook() end");
        assert_eq!(o.error.map(|e| e.ename).as_deref(), Some("Interrupted"));
    }
}

#[test]
fn io_output_and_input_name_real_files_as_in_lua() {
    let (mut i, host) = interpreter();
    let f = std::env::temp_dir().join(format!("llmspell-io-{}", crate::wire::random_hex(6)));
    let f = f.display().to_string();
    let code = format!(
        "io.output({f:?}) io.write('x', 1) io.close() io.output(io.stdout)\n\
         io.input({f:?}) local got = io.read('a') io.input(io.stdin) io.write('back') return got"
    );
    let o = i.execute(&code);
    assert!(o.error.is_none(), "{:?}", o.error);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x1");
    assert_eq!(shown(&o).as_deref(), Some("\"x1\""));
    assert_eq!(host.stdout(), "back");
    let _ = std::fs::remove_file(&f);
    let e = i.execute("io.output({})").error.unwrap();
    assert!(e.evalue.contains("FILE* expected"), "{}", e.evalue);
}

#[test]
fn the_debug_library_is_the_users_own() {
    let (mut i, _) = interpreter();
    let o = i.execute(
        "local n = 0 debug.sethook(function() n = n + 1 end, 'l') local x = 1\nx = 2\ndebug.sethook() return n");
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(
        shown(&o).and_then(|n| n.parse::<i64>().ok()) > Some(0),
        "the line hook never ran: {:?}",
        o.result
    );
}

#[test]
fn display_publishes_a_mime_bundle() {
    let (mut i, host) = interpreter();
    i.execute("display(display.html('<b>x</b>'))");
    let published = host.published.borrow_mut();
    let (kind, content) = published.last().expect("a display_data message");
    assert_eq!(kind, "display_data");
    assert_eq!(content["data"]["text/html"], "<b>x</b>");
}

#[test]
fn inspect_inside_a_calls_arguments_shows_the_called_function() {
    let (mut interp, _host) = interpreter();
    let doc = |i: &mut Interpreter, code: &str| i.inspect(code, code.len()).unwrap_or_default();
    let direct = doc(&mut interp, "string.format");
    assert!(direct.starts_with("string.format("), "{direct}");
    assert_eq!(doc(&mut interp, "string.format("), direct);
    assert_eq!(doc(&mut interp, "string.format(\"%d\", (1 + 2), "), direct);
    assert_eq!(interp.inspect("print(1) (", 10), None, "no function before the parenthesis");
}

#[test]
fn live_snapshot_reads_the_sessions_names_without_running_their_metamethods() {
    let (mut i, _) = interpreter();
    let o = i.execute(
        "ran = false\nlocal mt = {__pairs = function() ran = true end, __index = function() ran = true end,\n\
         __tostring = function() ran = true; return 'x' end, __len = function() ran = true; return 0 end}\n\
         t = setmetatable({a = 1, b = 'two'}, mt)\nfunction f(x, y) return x end",
    );
    assert!(o.error.is_none(), "{:?}", o.error);
    let s = i.live_snapshot();
    assert_eq!(s["globals"]["t"]["fields"]["a"]["summary"], "1");
    assert_eq!(s["globals"]["t"]["fields"]["b"]["summary"], "\"two\"");
    assert_eq!(s["globals"]["f"]["params"], serde_json::json!(["x", "y"]));
    assert!(s["globals"].get("print").is_none() && s["globals"].get("string").is_none());
    assert_eq!(i.evaluate("ran").unwrap()["text/plain"], "false", "a metamethod ran");
    // What one snapshot costs with 200 tables of user globals (printed, not asserted: `make bench`
    // style figures for the commit message; run with --nocapture).
    i.execute("for n = 1, 200 do _G['g' .. n] = {x = n, y = 'text', z = {1, 2, 3}} end");
    let started = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(i.live_snapshot());
    }
    eprintln!("live_snapshot with 200 table globals: {:?} each", started.elapsed() / 100);
    let (mut fresh, _) = interpreter();
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(fresh.live_snapshot());
    }
    eprintln!("live_snapshot of a fresh session: {:?} each", started.elapsed() / 1000);
}
