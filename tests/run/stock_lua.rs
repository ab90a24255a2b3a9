//! Differential tests against the stock `lua5.4`: the standard library, C modules, a missing
//! script or one from stdin, `arg`, the interpreter's options and `-i`.

use super::*;

/// Cases on what the caller gives a script: its directory, environment, arguments, paths and LUA_INIT.
fn callers_context_cases() -> Vec<Case<'static>> {
    vec![
        Case {
            files: &[("data.txt", "beside the caller\n"), ("mymod.lua", "return { name = 'mymod here' }")],
            ..Case::new(
                "cwd",
                "print(io.open('data.txt'):read('a'))\n\
             print(io.popen('pwd'):read('l'):match('[^/]*$'))\n\
             print(require('mymod').name)",
            )
        },
        Case {
            env: &[("FOO", "second")],
            ..Case::new(
                "environment",
                "print(os.getenv('FOO'), os.getenv('NOPE_NOT_SET'))\n\
             print(io.popen('echo child sees $FOO'):read('l'))\n\
             io.stdout:flush() os.execute('echo os.execute sees $FOO')",
            )
        },
        Case {
            args: &["one", "two words", "--", "-x", ""],
            ..Case::new(
                "arg",
                "print(#arg, arg[0], select('#', ...), ...)\nfor i = 1, #arg do print(i, arg[i]) end",
            )
        },
        Case::new("default_paths", "print(package.path) print(package.cpath)"),
        Case {
            env: &[("LUA_PATH", "./lib/?.lua;;"), ("LUA_CPATH_5_4", ";;./clib/?.so")],
            files: &[("lib/found.lua", "return 'found via LUA_PATH'")],
            ..Case::new("lua_path", "print(package.path) print(package.cpath) print(require('found'))")
        },
        Case { env: &[("LUA_INIT", "x = 5 print('init ran')")], ..Case::new("lua_init_code", "print(x)") },
        Case {
            env: &[("LUA_INIT_5_4", "@init.lua"), ("LUA_INIT", "error('not this one')")],
            files: &[("init.lua", "y = 'from init file'")],
            ..Case::new("lua_init_file", "print(y)")
        },
        Case { env: &[("LUA_INIT", "error('init fails')")], ..Case::new("lua_init_error", "print('never')") },
    ]
}

/// Cases on the io library: files, stdin, stdout and stderr, print.
fn io_cases() -> Vec<Case<'static>> {
    vec![
        Case::new(
            "io_output_creates_the_file",
            "io.output('f.txt') io.write('x', 1, '\\n') io.close() io.output(io.stdout)\n\
         print(io.open('f.txt'):read('a'), io.type(io.stdout), io.output() == io.stdout)",
        ),
        Case {
            files: &[("in.txt", "first line\nsecond\n")],
            ..Case::new("io_input", "io.input('in.txt') print(io.read('l')) print(io.read('a'))")
        },
        Case::new("rawlen_of_a_file_handle", "print(pcall(rawlen, io.stdout))\nprint(rawlen(io.stderr))"),
        Case {
            stdin: "a\nbb\n\nlast without newline",
            ..Case::new(
                "stdin_lines_and_eof",
                "for l in io.lines() do print(#l, l) end print(io.read('a'), io.read('l'))",
            )
        },
        Case {
            stdin: "40 2.5 tail\nmore",
            ..Case::new("stdin_numbers", "print(io.read('n', 'n'), io.read('a'))")
        },
        Case::new(
            "stderr_and_stdout",
            "io.stderr:write('to stderr\\n') print('to stdout') io.stderr:write('again\\n')",
        ),
        Case::new(
            "print_uses_tostring",
            "print(setmetatable({}, {__tostring = function() return 'T' end}), nil, 1.5, 2^63)",
        ),
    ]
}

/// Cases on how a script ends: os.exit, errors of every kind, closing and finalizers.
fn exit_and_error_cases() -> Vec<Case<'static>> {
    vec![
        Case::new("os_exit_code", "io.write('buffered') os.exit(3)"),
        Case::new("os_exit_true", "io.write('buffered') os.exit(true)"),
        Case::new(
            "os_exit_false_close",
            "setmetatable({}, {__gc = function() print('finalized') end}) io.write('buffered ') \
         os.exit(false, true)",
        ),
        Case::new("error_string", "local function f() error('boom') end\nf()"),
        Case::new("error_level_0", "error('no position', 0)"),
        Case::new("error_table", "error({ code = 1 })"),
        Case::new("error_nil", "error()"),
        Case::new("error_number", "error(42)"),
        Case::new(
            "error_tostring",
            "error(setmetatable({}, { __tostring = function() return 'custom' end }))",
        ),
        Case::new("syntax_error", "x = = 1"),
        Case::new(
            "runtime_error_in_pcall",
            "local ok, e = pcall(error, { 1 }) print(ok, type(e), e[1])\nprint(select(2, pcall(error, 'm')))",
        ),
        Case::new(
            "to_be_closed_and_gc_at_normal_end",
            "local x <close> = setmetatable({}, {__close = function() print('closed') end})\n\
         setmetatable({}, {__gc = function() print('collected at close') end})",
        ),
    ]
}

/// Cases on the rest of the standard library: debug hooks, coroutines, metatables and globals.
fn library_cases() -> Vec<Case<'static>> {
    vec![
        Case::new(
            "debug_hooks",
            "local n = 0\ndebug.sethook(function() n = n + 1 end, 'l')\nlocal x = 1\nx = x + 1\n\
         debug.sethook()\nprint(n, debug.gethook())\n\
         local f = function() end debug.sethook(f, 'c', 7) local h, m, c = debug.gethook()\n\
         debug.sethook() print(h == f, m, c)",
        ),
        Case::new(
            "coroutines_and_main_thread",
            "local co, main = coroutine.running() print(main, coroutine.isyieldable())\n\
         local c = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)\n\
         print(c(1), c(10))",
        ),
        Case::new(
            "string_metatable_and_globals",
            "print(getmetatable('').__index == string, type(_G), _VERSION, #package.searchers)\n\
         print(package.config:sub(1, 1), type(debug.getregistry()), collectgarbage('isrunning'))",
        ),
    ]
}

#[test]
fn the_standard_library_and_the_callers_context_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-diff");
    let groups = [callers_context_cases(), io_cases(), exit_and_error_cases(), library_cases()];
    let cases: Vec<Case> = groups.into_iter().flatten().collect();
    for case in &cases {
        differential(&home, case);
    }
}

#[test]
fn c_modules_load() {
    if !have_lua() || !have_c_modules() {
        return;
    }
    let home = Home::new("run-cmod");
    differential(
        &home,
        &Case::new(
            "c_modules",
            "local lpeg = require('lpeg') local cjson = require('cjson')\n\
             print((lpeg.C(lpeg.R('az')^1)):match('hello world'))\n\
             print(cjson.encode({ 1, 2, 3 }), cjson.decode('{\"a\":[true]}').a[1])",
        ),
    );
}

#[test]
fn missing_script_and_script_from_stdin_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-stdin");
    let mut results = Vec::new();
    for program in [BIN, LUA] {
        let dir = case_dir(&home, &Case::new("stdin_script", ""));
        let mut c = base_command(program, &home, &dir);
        if program == BIN {
            c.arg("run");
        }
        let from_stdin = run_with_stdin(
            {
                let mut c = base_command(program, &home, &dir);
                if program == BIN {
                    c.arg("run");
                }
                c.args(["-", "a1"]);
                c
            },
            "print('from stdin', ...) print(io.read('a'))",
        );
        c.arg("no-such-file.lua");
        let missing = run_with_stdin(c, "");
        results.push((from_stdin, missing));
    }
    for i in 0..2 {
        let pick = |r: &(Output, Output)| if i == 0 { r.0.clone() } else { r.1.clone() };
        let (a, b) = (pick(&results[0]), pick(&results[1]));
        assert_eq!(a.stdout, b.stdout);
        assert_eq!(a.status.code(), b.status.code());
        assert_eq!(normalise(&a.stderr), normalise(&b.stderr));
    }
}

/// stderr and stdout of an options case with what may differ by design made equal: the version line
/// (this binary carries its own Lua 5.4 release) and the usage line's program.
fn normalise_options(text: &[u8]) -> String {
    normalise(text)
        .lines()
        .map(|l| {
            if l.starts_with("Lua 5.4.") && l.contains("Copyright") {
                "Lua 5.4 (version line)".to_string()
            } else if let Some(rest) = l.strip_prefix("usage: ") {
                format!("usage: lua{}", rest.split_once(" [options]").map_or("", |(_, r)| r))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn luas_options_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-options");
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&[&str], &str, Env)] = &[
        (&["-e", "print(1 + 1)"], "", &[]),
        (&["-eprint(2)", "-lstring", "-e", "print(type(string))"], "", &[]),
        (&["-l", "m=string", "-e", "print(m.rep('a', 3))"], "", &[]),
        (&["-e"], "", &[]),
        (&["-x"], "", &[]),
        (&["-v", "-e", "print(_VERSION)"], "", &[]),
        (&["-v"], "print('not run: -v is an active option')", &[]),
        (&["-e", "warn('off')", "-W", "-e", "warn('x', 'y') warn('@off') warn('z')"], "", &[]),
        (&["-e", "error('boom')", "-e", "print('not reached')"], "", &[]),
        (&["-l", "no_such_module_anywhere"], "", &[]),
        (&["-e", "x = 7", "script.lua", "a", "b"], "", &[]),
        (&["--", "script.lua", "-e"], "", &[]),
        (&[], "print('stdin is the script', ...)", &[]),
        (&["-"], "print('dash', #arg)", &[]),
        (
            &["-E", "-e", "print(package.path:find('/nowhere', 1, true))"],
            "",
            &[("LUA_INIT", "print('init ran')"), ("LUA_PATH", "/nowhere/?.lua")],
        ),
        (
            &["-e", "print(package.path:find('/nowhere', 1, true) ~= nil)"],
            "",
            &[("LUA_INIT", "print('init ran')"), ("LUA_PATH", "/nowhere/?.lua;;")],
        ),
    ];
    for (i, (args, stdin, env)) in cases.iter().enumerate() {
        let mut outs = Vec::new();
        for program in [BIN, LUA] {
            let dir = case_dir(&home, &Case::new("opts", "print('script', ...)"));
            let mut c = base_command(program, &home, &dir);
            if program == BIN {
                c.arg("run");
            }
            c.args(*args);
            for (k, v) in *env {
                c.env(k, v);
            }
            outs.push(run_with_stdin(c, stdin));
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (ours, theirs) = (&outs[0], &outs[1]);
        let show = |o: &Output| {
            format!("{:?} {:?} {:?}", o.status, normalise_options(&o.stdout), normalise_options(&o.stderr))
        };
        assert!(
            normalise_options(&ours.stdout) == normalise_options(&theirs.stdout)
                && ours.status.code() == theirs.status.code()
                && normalise_options(&ours.stderr) == normalise_options(&theirs.stderr),
            "case {i} {args:?}:\n llmspell run: {}\n lua5.4:       {}",
            show(ours),
            show(theirs)
        );
    }
}

#[test]
fn run_i_enters_luas_interactive_loop_after_the_script() {
    let home = Home::new("run-interactive");
    let dir = case_dir(&home, &Case::new("interactive", "greeting = 'hi from the script'"));
    let out = run_with_stdin(
        {
            let mut c = base_command(BIN, &home, &dir);
            c.args(["run", "-i", "script.lua"]);
            c
        },
        "greeting\nx = 1 +\n 2\n= x * 2\nerror('oops')\nprint('still here')\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Lua 5.4"), "-i shows the version first: {stdout:?}");
    // An expression's value is printed, a statement continues on `>>`, `=` is `return`, an error
    // is reported without ending the loop, and end of input ends it with a newline.
    for want in ["> hi from the script\n", ">> ", "> 6\n", "> still here\n"] {
        assert!(stdout.contains(want), "missing {want:?} in {stdout:?}");
    }
    assert!(stdout.ends_with("> \n"), "{stdout:?}");
    assert!(stderr.starts_with("stdin:1: oops"), "errors carry no program name in the loop: {stderr:?}");
}
