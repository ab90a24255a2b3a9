//! Sessions: exec, repl and run sharing one kernel; run's output, input, errors and Ctrl-C.

use super::*;

// ---------------------------------------------------------------------------------------------
// Sessions: exec, repl, run
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_and_repl_see_each_others_globals() {
    let home = Home::new("shared");
    ok(&home, &["exec", "from_exec = 'set by exec'"]);
    let o = home.run(&["repl"], "print(from_exec)\nfrom_repl = 'set by repl'\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "set by exec\n");
    assert_eq!(ok(&home, &["exec", "print(from_repl)"]), "set by repl\n");
}

#[test]
fn run_gets_fresh_globals_each_time_but_shares_state() {
    let home = Home::new("fresh");
    ok(&home, &["exec", "session_global = 'session'"]);
    let a = script(
        &home,
        "a.lua",
        "print(tostring(leaked), tostring(session_global))\nleaked = 'from a previous run'\nstate.set('shared', 'kept')\n",
    );
    assert_eq!(ok(&home, &["run", &a]), "nil\tnil\n");
    assert_eq!(ok(&home, &["run", &a]), "nil\tnil\n", "the second run saw the first run's globals");
    let b = script(&home, "b.lua", "local v = state.get('shared')\nprint(v)\n");
    assert_eq!(ok(&home, &["run", &b]), "kept\n");
    // The run's globals did not leak into the interactive session either.
    assert_eq!(ok(&home, &["exec", "print(tostring(leaked))"]), "nil\n");
}

#[test]
fn run_sets_arg_with_script_path_and_verbatim_arguments() {
    let home = Home::new("arg");
    let path = script(
        &home,
        "args.lua",
        "print(arg[0])\nprint(#arg)\nfor i = 1, #arg do print(i, arg[i]) end\nprint(select('#', ...))\n",
    );
    let out = ok(&home, &["run", &path, "--foo", "-x", "two words", "--", "-"]);
    assert_eq!(out, format!("{path}\n5\n1\t--foo\n2\t-x\n3\ttwo words\n4\t--\n5\t-\n5\n"));
}

#[test]
fn run_dash_reads_the_script_from_stdin() {
    let home = Home::new("dash");
    let o = home.run(&["run", "-", "first", "--flag"], "print('from stdin', arg[1], arg[2])\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "from stdin\tfirst\t--flag\n");
}

#[test]
fn run_output_is_live_not_at_the_end() {
    let home = Home::new("live");
    start_default(&home); // keep the cold start out of the measurement
    let path = script(
        &home,
        "live.lua",
        "print('first')\nlocal t = os.clock() while os.clock() - t < 1.5 do end\nprint('second')\n",
    );
    let mut run = spawn(&home, &["run", &path]);
    let lines = line_reader(run.child().stdout.take().unwrap());
    let first = expect_line(&lines, "first");
    let second = expect_line(&lines, "second");
    let status = run.wait(LONG);
    let ended = Instant::now();
    assert!(status.success(), "{status:?}");
    // The script burns 1.5 s of CPU between the lines: output that is only shown at the end would
    // deliver both at once.
    assert!(second - first >= Duration::from_secs(1), "lines arrived {:?} apart", second - first);
    assert!(
        ended - first >= Duration::from_secs(1),
        "the first line arrived only {:?} before the end",
        ended - first
    );
}

#[test]
fn run_keeps_stdout_and_stderr_separate() {
    let home = Home::new("streams");
    let path = script(
        &home,
        "streams.lua",
        "print('out 1')\nio.stderr:write('err 1\\n')\nio.stdout:write('out 2\\n')\nio.stderr:write('err 2\\n')\n",
    );
    let o = home.run(&["run", &path], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "out 1\nout 2\n");
    assert_eq!(stderr(&o), "err 1\nerr 2\n");
}

#[test]
fn run_shows_child_process_output_in_order_on_the_right_stream() {
    // Like `lua script.lua`: what os.execute and io.popen's children write reaches the user.
    let home = Home::new("children");
    let path = script(
        &home,
        "children.lua",
        "print('lua 1')\nos.execute('echo child out; echo child err >&2')\nprint('lua 2')\n\
         local f = io.popen('echo piped') print('read: ' .. f:read('l')) f:close()\n",
    );
    let o = home.run(&["run", &path], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "lua 1\nchild out\nlua 2\nread: piped\n");
    assert_eq!(stderr(&o), "child err\n");
    // Between requests it goes nowhere: the next cell's output is only its own.
    let o = home.run(&["exec", "os.execute('(sleep 0.3; echo late) &')"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let o = home.run(&["exec", "print('next')"], "");
    assert_eq!(stdout(&o), "next\n");
}

#[test]
fn run_reads_piped_stdin_line_by_line_until_eof() {
    let home = Home::new("upcase");
    let path =
        script(&home, "upcase.lua", "for line in io.lines() do print(line:upper()) end\nprint('end')\n");
    let o = home.run(&["run", &path], "a\nb\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "A\nB\nend\n");

    // io.read() returns nil at EOF, and keeps returning nil.
    let path =
        script(&home, "read.lua", "print(io.read())\nprint(io.read())\nprint(io.read())\nprint(io.read())\n");
    let o = home.run(&["run", &path], "one\ntwo\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "one\ntwo\nnil\nnil\n");
}

#[test]
fn run_io_read_number_and_all() {
    let home = Home::new("readna");
    let path = script(
        &home,
        "na.lua",
        "local a, b = io.read('n', 'n')\nprint(a + b, math.type(a), math.type(b))\nlocal rest = io.read('a')\nprint(#rest, (rest:gsub('\\n', '|')))\nprint(io.read('a') == '', io.read('n'))\n",
    );
    let o = home.run(&["run", &path], "40 2.5 tail\nmore lines\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "42.5\tinteger\tfloat\n17\t tail|more lines|\ntrue\tnil\n");
}

#[test]
fn run_lua_error_prints_message_and_traceback_on_stderr_and_exits_1() {
    let home = Home::new("luaerror");
    let path =
        script(&home, "err.lua", "print('before')\nlocal function boom() error('kaboom') end\nboom()\n");
    let o = home.run(&["run", &path], "");
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert_eq!(stdout(&o), "before\n");
    let err = stderr(&o);
    assert!(err.contains("err.lua:2: kaboom"), "message with its location: {err}");
    assert!(err.contains("stack traceback"), "a traceback: {err}");
    assert!(err.contains("boom"), "the traceback names the function: {err}");
}

#[test]
fn run_os_exit_sets_the_exit_code_and_the_kernel_survives() {
    let home = Home::new("osexit");
    let pid = start_default(&home);
    ok(&home, &["exec", "survivor = 'still here'"]);
    let path = script(&home, "exit.lua", "print('bye')\nos.exit(3)\nprint('not reached')\n");
    let o = home.run(&["run", &path], "");
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert_eq!(stdout(&o), "bye\n");
    assert_eq!(ok(&home, &["exec", "print(survivor)"]), "still here\n");
    assert_eq!(home.kernel_pid("default"), Some(pid));
    assert!(process_alive(pid));
}

#[test]
fn run_ctrl_c_interrupts_like_lua_and_the_kernel_keeps_its_globals() {
    let home = Home::new("sigintrun");
    let pid = start_default(&home);
    ok(&home, &["exec", "kept = 99"]);
    let path = script(&home, "forever.lua", "print('looping')\nwhile true do end\n");
    let mut run = spawn(&home, &["run", &path]);
    let lines = line_reader(run.child().stdout.take().unwrap());
    let err = collector(run.child().stderr.take().unwrap());
    expect_line(&lines, "looping");

    sigint(run.pid());
    let sent = Instant::now();
    let status = run.wait(Duration::from_secs(30));
    assert!(sent.elapsed() < Duration::from_secs(25), "Ctrl-C took {:?}", sent.elapsed());
    // As lua: the first Ctrl-C is an "interrupted!" error (exit 1); a second one would kill (130).
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(err.join().unwrap().contains("interrupted!"));
    assert_eq!(ok(&home, &["exec", "print(kept)"]), "99\n");
    assert_eq!(home.kernel_pid("default"), Some(pid));
    assert_eq!(kernel_processes(&home), vec![pid]);
}

#[test]
fn state_get_returns_exactly_one_value() {
    let home = Home::new("stateget");
    let a = script(&home, "set.lua", "state.set('k', 'v')\n");
    ok(&home, &["run", &a]);
    let b = script(&home, "get.lua", "print(state.get('k'))\nprint(select('#', state.get('k')))\n");
    assert_eq!(ok(&home, &["run", &b]), "v\n1\n");
    assert_eq!(ok(&home, &["exec", "state.get('k')"]), "\"v\"\n");
}

#[test]
fn the_session_loads_c_modules_from_the_platforms_lua_directories() {
    // Debian's lua-cjson and lua-lpeg (installed by .ci/run), as `lua5.4` finds them.
    if !Path::new("/usr/share/doc/lua-cjson").exists() || !Path::new("/usr/share/doc/lua-lpeg").exists() {
        println!("skipped: lua-cjson or lua-lpeg is not installed");
        return;
    }
    let home = Home::new("cmodules");
    assert_eq!(ok(&home, &["exec", "print(require('cjson').encode({1, 2}))"]), "[1,2]\n");
    assert_eq!(ok(&home, &["exec", "local l = require('lpeg') print(l.match(l.R('az')^1, 'abc1'))"]), "4\n");
}

#[test]
fn a_command_queued_behind_another_clients_cell_says_so_and_then_runs() {
    let home = Home::new("waitnotice");
    start_default(&home);
    let gate = home.path("gate").to_string_lossy().into_owned();
    let started = home.path("started").to_string_lossy().into_owned();
    let long = format!("io.open({started:?}, 'w'):close() while not io.open({gate:?}) do end");
    let mut first = spawn(&home, &["exec", &long]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "the first cell never started");
    let mut second = spawn(&home, &["exec", "print('second ran')"]);
    let err = line_reader(second.child().stderr.take().unwrap());
    let out = line_reader(second.child().stdout.take().unwrap());
    // The notice comes while the first cell still runs (its gate is shut until then).
    let (notice, _) = err.recv_timeout(LONG).expect("no notice on stderr");
    assert!(
        notice.contains("waiting")
            && notice.contains(&format!("pid {}", first.pid()))
            && notice.contains("Ctrl-C"),
        "{notice}"
    );
    std::fs::write(&gate, "").unwrap();
    expect_line(&out, "second ran");
    assert!(second.wait(LONG).success());
    assert!(first.wait(LONG).success());
}
