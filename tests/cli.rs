//! The `llmspell` command line (issue 3): one shared, auto-started kernel behind `run`, `exec` and
//! `repl`, kernel management, exit codes. Every test runs the built binary in its own LLMSPELL_HOME;
//! the `Home` helper stops that home's kernels when the test ends.
//!
//! `jupyter console --existing` against a kernel started by `llmspell exec` is covered by the Python
//! tests (tests/jupyter/test_console.py), not here.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const LONG: Duration = Duration::from_secs(60);

/// Pids of the still running kernel processes of this home: `llmspell kernel start ...` whose
/// command line mentions the home's path (the kernel's --log-file lives inside it).
fn kernel_processes(home: &Home) -> Vec<i32> {
    let needle = home.dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_kernel = args.windows(2).any(|w| w[0] == "kernel" && w[1] == "start");
        if is_kernel && args.iter().any(|a| a.contains(&needle)) && any_thread_alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// The file names in `$LLMSPELL_HOME/kernels`, sorted (empty if the directory does not exist).
fn kernel_files(home: &Home) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.kernels_dir())
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn has_file(home: &Home, name: &str) -> bool {
    home.kernels_dir().join(name).exists()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}", o.status))
}

fn show(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, stdout(o), stderr(o))
}

/// `llmspell ARGS` must succeed; returns its stdout.
fn ok(home: &Home, args: &[&str]) -> String {
    let o = home.run(args, "");
    assert_eq!(code(&o), 0, "llmspell {args:?} failed: {}", show(&o));
    stdout(&o)
}

/// Runs a prepared command with empty stdin, killing it if it outlives `timeout`.
fn output_of(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut guard = Guard(Some(child));
    let status = guard.wait(timeout);
    let mut child = guard.0.take().unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let _ = child.wait(); // already exited: returns its status at once
    Output { status, stdout: out, stderr: err }
}

/// A child process that is killed (and reaped) if the test lets go of it early, e.g. on panic.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
    /// Waits for the child to exit; panics (killing it) after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child().try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child().kill();
                panic!("the child process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a child's pipe as they arrive, each with the instant it was read.
fn line_reader(pipe: impl Read + Send + 'static) -> mpsc::Receiver<(String, Instant)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Whole output of a pipe, collected on a thread (so the child never blocks on a full pipe).
fn collector(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Starts `llmspell ARGS` with stdout/stderr piped (stdin: null), killed on drop.
fn spawn(home: &Home, args: &[&str]) -> Guard {
    let child = home
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the llmspell binary runs");
    Guard(Some(child))
}

/// Waits for a line equal to `want`; panics with what came instead after LONG.
fn expect_line(rx: &mpsc::Receiver<(String, Instant)>, want: &str) -> Instant {
    let deadline = Instant::now() + LONG;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((line, at)) if line == want => return at,
            Ok((line, _)) => seen.push(line),
            Err(_) => panic!("no line {want:?} on the child's stdout; saw {seen:?}"),
        }
    }
}

/// Whether any thread of process `pid` is still running. The main thread turns zombie before the
/// others have finished exiting (and closed the files, releasing the kernel's lock), so
/// `process_alive(pid)` alone is not enough after a kill.
fn any_thread_alive(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| match std::fs::read_to_string(t.path().join("stat")) {
        Ok(stat) => {
            !stat.rsplit_once(") ").map(|(_, r)| r.starts_with('Z') || r.starts_with('X')).unwrap_or(true)
        }
        Err(_) => false,
    })
}

/// `kill -9` a kernel and wait until it is completely gone.
fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid this test found as one of its own home's kernels.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
    assert!(wait_until(Duration::from_secs(10), || !any_thread_alive(pid)), "kernel {pid} survived kill -9");
}

fn sigint(pid: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill -INT {pid}");
}

/// Starts the default kernel through `exec` and returns its pid.
fn start_default(home: &Home) -> i32 {
    ok(home, &["exec", "started_by_test = true"]);
    home.kernel_pid("default").expect("the connection file has the kernel's pid")
}

fn script(home: &Home, name: &str, text: &str) -> String {
    write_file(&home.dir, name, text).to_string_lossy().into_owned()
}

fn nonempty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------
// Finding or starting the kernel
// ---------------------------------------------------------------------------------------------

#[test]
fn cold_start_spawns_exactly_one_kernel_and_reuses_it() {
    let home = Home::new("cold");
    assert!(kernel_processes(&home).is_empty());
    assert!(!has_file(&home, "default.json"));

    assert_eq!(ok(&home, &["exec", "print('hello')"]), "hello\n");
    let pid = home.kernel_pid("default").expect("default.json with a pid");
    assert_eq!(kernel_processes(&home), vec![pid], "exactly one kernel process, the one in default.json");
    let files = kernel_files(&home);
    assert_eq!(files.iter().filter(|f| f.ends_with(".json")).collect::<Vec<_>>(), ["default.json"]);
    assert_eq!(files.iter().filter(|f| f.ends_with(".lock")).collect::<Vec<_>>(), ["default.lock"]);

    // The next command finds it: no second kernel.
    ok(&home, &["exec", "print('again')"]);
    ok(&home, &["run", &script(&home, "s.lua", "print('script')")]);
    assert_eq!(kernel_processes(&home), vec![pid]);
    assert_eq!(home.kernel_pid("default"), Some(pid));
}

#[test]
fn auto_started_kernel_is_detached_and_logs_to_its_log_file() {
    let home = Home::new("detached");
    let pid = start_default(&home);
    // Its own session (setsid), so the client's terminal signals never reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    assert_eq!(fields[3], pid.to_string(), "session id of the kernel: {stat}");
    // No stdio inherited from the client: stdin is /dev/null, stdout and stderr are the kernel's
    // own pipes (it forwards child processes' output to the running request).
    let target = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(target, Path::new("/dev/null"), "kernel fd 0");
    for fd in 1..=2 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert!(target.to_string_lossy().starts_with("pipe:"), "kernel fd {fd}: {target:?}");
    }
    let log = std::fs::read_to_string(home.kernels_dir().join("default.log")).expect("kernels/default.log");
    assert!(!log.is_empty(), "the log is empty");
}

#[test]
fn twenty_concurrent_first_execs_all_succeed_on_one_kernel() {
    let home = Home::new("twenty");
    let n = 20;
    let barrier = std::sync::Barrier::new(n);
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    home.run_timeout(
                        &["exec", "hits = (hits or 0) + 1\nprint('ok')"],
                        "",
                        Duration::from_secs(120),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outputs {
        assert_eq!(code(o), 0, "a concurrent first exec failed: {}", show(o));
        assert_eq!(stdout(o), "ok\n", "{}", show(o));
    }
    let pid = home.kernel_pid("default").unwrap();
    assert_eq!(kernel_processes(&home), vec![pid], "exactly one kernel after twenty concurrent first calls");
    // All twenty ran in the one shared session.
    assert_eq!(ok(&home, &["exec", "hits"]), "20\n");
}

#[test]
fn kill_9_then_run_starts_a_fresh_kernel_with_a_one_line_notice() {
    let home = Home::new("kill9run");
    let old = start_default(&home);
    sigkill(old);

    let o = home.run(&["run", &script(&home, "hi.lua", "print('hi')")], "");
    assert_eq!(code(&o), 0, "run after kill -9 must just work: {}", show(&o));
    assert_eq!(stdout(&o), "hi\n");
    let err = nonempty_lines(&stderr(&o)).into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(err.len(), 1, "exactly one notice line on stderr: {}", show(&o));
    let new = home.kernel_pid("default").unwrap();
    assert_ne!(new, old, "a new kernel");
    assert_eq!(kernel_processes(&home), vec![new]);
}

#[test]
fn kill_9_of_the_kernel_during_run_is_noticed_by_the_client() {
    let home = Home::new("kill9during");
    let pid = start_default(&home);
    let path = script(&home, "loop.lua", "print('looping')\nwhile true do end\n");
    let mut run = spawn(&home, &["run", &path]);
    let lines = line_reader(run.child().stdout.take().unwrap());
    let err = collector(run.child().stderr.take().unwrap());
    expect_line(&lines, "looping");

    sigkill(pid);
    let killed = Instant::now();
    let status = run.wait(Duration::from_secs(30));
    let took = killed.elapsed();
    let err = err.join().unwrap();
    assert!(took < Duration::from_secs(25), "the client took {took:?} to notice the kernel died");
    assert!(!status.success(), "the client must fail when its kernel dies: {status:?}");
    assert!(err.contains("died"), "stderr must say the kernel died: {err:?} (status {status:?})");
}

#[test]
fn idle_timeout_flag_makes_the_auto_started_kernel_exit_and_clean_up() {
    let home = Home::new("idleflag");
    ok(&home, &["--idle-timeout", "2", "exec", "x = 1"]);
    assert_idle_exit(&home);
}

#[test]
fn idle_timeout_env_makes_the_auto_started_kernel_exit_and_clean_up() {
    let home = Home::new("idleenv");
    let mut cmd = home.cmd(&["exec", "x = 1"]);
    cmd.env("LLMSPELL_IDLE_TIMEOUT", "2");
    let o = output_of(cmd, LONG);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_idle_exit(&home);
}

fn assert_idle_exit(home: &Home) {
    let pid = home.kernel_pid("default").expect("a kernel was started");
    assert!(
        wait_until(Duration::from_secs(30), || !any_thread_alive(pid)),
        "the kernel with a 2 s idle timeout was still running after 30 s"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !has_file(home, "default.json")
            && !has_file(home, "default.lock")),
        "the idle kernel left its files: {:?}",
        kernel_files(home)
    );
    assert!(kernel_processes(home).is_empty());
    // What may remain: the log, the clients' spawn lock, and the marker that tells the next command
    // the session is new.
    for f in kernel_files(home) {
        assert!(
            matches!(f.as_str(), "default.log" | "default.spawn" | "default.idle"),
            "unexpected file left: {f}"
        );
    }
}

#[test]
fn connect_uses_an_existing_connection_file_and_never_spawns() {
    let home = Home::new("connect");
    let o = home.run(&["kernel", "start", "--daemon", "--id", "theirs"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let pid = home.kernel_pid("theirs").unwrap();
    // A copy outside kernels/, as a kernel started by Jupyter would have.
    let copy = home.path("copied.json");
    std::fs::copy(home.kernels_dir().join("theirs.json"), &copy).unwrap();
    let copy = copy.to_string_lossy().into_owned();

    assert_eq!(ok(&home, &["--connect", &copy, "exec", "via = 'connect'\nprint(via)"]), "connect\n");
    assert_eq!(ok(&home, &["--connect", &copy, "run", &script(&home, "c.lua", "print('ran')")]), "ran\n");
    assert_eq!(ok(&home, &["--connect", &copy, "repl"]), ""); // empty session, just connects
    assert_eq!(kernel_processes(&home), vec![pid], "--connect must not start a kernel");
    assert!(!has_file(&home, "default.json"));
}

#[test]
fn connect_to_a_dead_or_missing_file_fails_and_starts_nothing() {
    let home = Home::new("connectdead");
    ok(&home, &["kernel", "start", "--daemon", "--id", "gone"]);
    let copy = home.path("copied.json");
    std::fs::copy(home.kernels_dir().join("gone.json"), &copy).unwrap();
    ok(&home, &["kernel", "stop", "gone"]);
    assert!(kernel_processes(&home).is_empty());

    let missing = home.path("missing.json");
    for file in [&copy, &missing] {
        let f = file.to_string_lossy();
        let o = home.run(&["--connect", &f, "exec", "print(1)"], "");
        assert_eq!(code(&o), 1, "--connect {f}: {}", show(&o));
        assert_eq!(stdout(&o), "");
        assert_eq!(nonempty_lines(&stderr(&o)).len(), 1, "one error line: {}", show(&o));
        assert!(kernel_processes(&home).is_empty(), "--connect {f} started a kernel");
        assert!(!has_file(&home, "default.json"));
    }
}

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

// ---------------------------------------------------------------------------------------------
// exec and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_prints_the_value_of_a_trailing_expression() {
    let home = Home::new("trailing");
    assert_eq!(ok(&home, &["exec", "1 + 1"]), "2\n");
    assert_eq!(ok(&home, &["exec", "y = 20\ny * 2 + 2"]), "42\n");
    assert_eq!(ok(&home, &["exec", "print('out')\nw = 'value'\nw"]), "out\n\"value\"\n");
    assert_eq!(ok(&home, &["exec", "z = 1"]), "", "a statement shows nothing");
}

#[test]
fn exec_lua_error_exits_1_with_the_error_on_stderr() {
    let home = Home::new("execerr");
    let o = home.run(&["exec", "error('exec failed here')"], "");
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("exec failed here"), "{}", show(&o));
    assert_eq!(ok(&home, &["exec", "print('fine')"]), "fine\n");
}

#[test]
fn exec_ctrl_c_exits_130_and_the_session_survives() {
    let home = Home::new("sigintexec");
    let pid = start_default(&home);
    ok(&home, &["exec", "kept = 'yes'"]);
    let mut exec = spawn(&home, &["exec", "print('looping')\nwhile true do end"]);
    let lines = line_reader(exec.child().stdout.take().unwrap());
    let _err = collector(exec.child().stderr.take().unwrap());
    expect_line(&lines, "looping");
    sigint(exec.pid());
    let status = exec.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(ok(&home, &["exec", "print(kept)"]), "yes\n");
    assert_eq!(home.kernel_pid("default"), Some(pid));
}

#[test]
fn bad_command_line_exits_2_with_one_line_error() {
    let home = Home::new("usage");
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["--bogus", "exec", "1"],
        &["--kernel"],
        &["exec"],
        &["exec", "1", "extra"],
        &["repl", "extra"],
        &["kernel"],
        &["kernel", "frob"],
        &["kernel", "status", "a", "b"],
        &["--idle-timeout", "soon", "exec", "1"],
    ];
    for args in cases {
        let o = home.run(args, "");
        assert_eq!(code(&o), 2, "llmspell {args:?}: {}", show(&o));
        assert_eq!(stdout(&o), "", "llmspell {args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "llmspell {args:?}: one line on stderr, got {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(kernel_processes(&home).is_empty(), "a bad command line started a kernel");
}

#[test]
fn help_on_every_command_and_version_exit_0() {
    let home = Home::new("help");
    let cases: &[&[&str]] = &[
        &["--help"],
        &["-h"],
        &["help"],
        &["run", "--help"],
        &["exec", "--help"],
        &["repl", "--help"],
        &["kernel", "--help"],
        &["kernel", "start", "--help"],
        &["kernel", "stop", "--help"],
        &["kernel", "list", "--help"],
        &["kernel", "status", "--help"],
        &["kernel", "install", "--help"],
        &["state", "--help"],
    ];
    for args in cases {
        let o = home.run(args, "");
        assert_eq!(code(&o), 0, "llmspell {args:?}: {}", show(&o));
        assert!(stdout(&o).contains("llmspell"), "llmspell {args:?} printed no help: {}", show(&o));
    }
    for flag in ["--version", "-V"] {
        let o = home.run(&[flag], "");
        assert_eq!(code(&o), 0, "{}", show(&o));
        assert_eq!(stdout(&o), format!("llmspell {}\n", env!("CARGO_PKG_VERSION")));
    }
    assert!(kernel_processes(&home).is_empty(), "--help started a kernel");
}

#[test]
fn help_on_every_state_subcommand_exits_0() {
    let home = Home::new("statehelp");
    for verb in ["get", "set", "delete", "list", "clear", "export", "import", "repair", "path"] {
        let o = home.run(&["state", verb, "--help"], "");
        assert_eq!(code(&o), 0, "llmspell state {verb} --help: {}", show(&o));
        assert!(
            stdout(&o).contains("llmspell state"),
            "llmspell state {verb} --help printed no help: {}",
            show(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// kernel start / list / status / stop
// ---------------------------------------------------------------------------------------------

#[test]
fn kernel_start_daemon_prints_id_and_connection_file() {
    let home = Home::new("daemon");
    let o = home.run(&["kernel", "start", "--daemon", "--id", "bg"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let conn = home.kernels_dir().join("bg.json");
    let out = stdout(&o);
    assert!(out.contains("bg"), "{out}");
    assert!(out.contains(&*conn.to_string_lossy()), "{out}");
    let pid = home.kernel_pid("bg").unwrap();
    assert_eq!(kernel_processes(&home), vec![pid]);
    // It serves requests through --kernel.
    assert_eq!(ok(&home, &["--kernel", "bg", "exec", "1 + 2"]), "3\n");
    assert_eq!(kernel_processes(&home), vec![pid]);
}

#[test]
fn kernel_list_shows_id_pid_and_connection_file() {
    let home = Home::new("list");
    ok(&home, &["kernel", "start", "--daemon", "--id", "one"]);
    ok(&home, &["kernel", "start", "--daemon", "--id", "two"]);
    let out = ok(&home, &["kernel", "list"]);
    for id in ["one", "two"] {
        let pid = home.kernel_pid(id).unwrap().to_string();
        let conn = home.kernels_dir().join(format!("{id}.json")).to_string_lossy().into_owned();
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}: {out}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(cols.contains(&pid.as_str()), "row {row:?} lacks pid {pid}");
        assert!(cols.contains(&conn.as_str()), "row {row:?} lacks {conn}");
    }
    assert!(!out.lines().any(|l| l.starts_with("default")), "{out}");
}

#[test]
fn kernel_list_cleans_up_after_a_crashed_kernel() {
    let home = Home::new("liststale");
    let pid = start_default(&home);
    sigkill(pid);
    let o = home.run(&["kernel", "list"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(!stdout(&o).lines().any(|l| l.starts_with("default")), "a dead kernel is listed: {}", show(&o));
    assert!(
        !has_file(&home, "default.json") && !has_file(&home, "default.lock"),
        "{:?}",
        kernel_files(&home)
    );
}

#[test]
fn kernel_status_exits_0_when_alive_and_1_when_not() {
    let home = Home::new("status");
    assert_eq!(code(&home.run(&["kernel", "status"], "")), 1, "no kernel yet");
    assert_eq!(code(&home.run(&["kernel", "status", "st"], "")), 1);
    ok(&home, &["kernel", "start", "--daemon", "--id", "st"]);
    assert_eq!(code(&home.run(&["kernel", "status", "st"], "")), 0);
    assert_eq!(code(&home.run(&["kernel", "status"], "")), 1, "default is still not running");
    let pid = start_default(&home);
    assert_eq!(code(&home.run(&["kernel", "status"], "")), 0);
    ok(&home, &["kernel", "stop", "st"]);
    assert_eq!(code(&home.run(&["kernel", "status", "st"], "")), 1, "stopped");
    sigkill(pid);
    assert_eq!(code(&home.run(&["kernel", "status"], "")), 1, "killed");
}

#[test]
fn kernel_stop_id_stops_that_kernel_only() {
    let home = Home::new("stopid");
    ok(&home, &["kernel", "start", "--daemon", "--id", "victim"]);
    ok(&home, &["kernel", "start", "--daemon", "--id", "bystander"]);
    let victim = home.kernel_pid("victim").unwrap();
    let bystander = home.kernel_pid("bystander").unwrap();
    let o = home.run(&["kernel", "stop", "victim"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(
        wait_until(Duration::from_secs(10), || !any_thread_alive(victim)),
        "the stopped kernel still runs"
    );
    assert!(!has_file(&home, "victim.json") && !has_file(&home, "victim.lock"), "{:?}", kernel_files(&home));
    assert_eq!(kernel_processes(&home), vec![bystander]);
    assert_eq!(ok(&home, &["--kernel", "bystander", "exec", "'alive'"]), "\"alive\"\n");
}

#[test]
fn kernel_stop_all_leaves_no_process_and_only_logs() {
    let home = Home::new("stopall");
    start_default(&home);
    ok(&home, &["kernel", "start", "--daemon", "--id", "a"]);
    ok(&home, &["kernel", "start", "--daemon", "--id", "b"]);
    let pids = kernel_processes(&home);
    assert_eq!(pids.len(), 3);
    let o = home.run(&["kernel", "stop", "--all"], "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    for pid in pids {
        assert!(wait_until(Duration::from_secs(10), || !any_thread_alive(pid)), "kernel {pid} still runs");
    }
    assert!(kernel_processes(&home).is_empty());
    assert_eq!(kernel_files(&home), ["a.log", "b.log", "default.log"], "only the logs may remain");
}

#[test]
fn kernel_start_twice_with_the_same_id_fails_naming_it() {
    let home = Home::new("startdup");
    ok(&home, &["kernel", "start", "--daemon", "--id", "dup"]);
    let pid = home.kernel_pid("dup").unwrap();
    let o = home.run(&["kernel", "start", "--daemon", "--id", "dup"], "");
    assert_ne!(code(&o), 0, "{}", show(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("dup"), "the error names the kernel: {err:?}");
    assert_eq!(kernel_processes(&home), vec![pid], "the running kernel is untouched");
    assert_eq!(home.kernel_pid("dup"), Some(pid));
}

// ---------------------------------------------------------------------------------------------
// REPL (stdin piped, not a terminal)
// ---------------------------------------------------------------------------------------------

#[test]
fn repl_meta_kernel_shows_pid_and_connection_file() {
    let home = Home::new("replkernel");
    let pid = start_default(&home);
    let o = home.run(&["repl"], ".kernel\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    let conn = home.kernels_dir().join("default.json");
    assert!(out.contains(&pid.to_string()), "no pid {pid} in {out:?}");
    assert!(out.contains(&*conn.to_string_lossy()), "no connection file in {out:?}");
}

#[test]
fn repl_meta_help_lists_the_meta_commands() {
    let home = Home::new("replhelp");
    let o = home.run(&["repl"], ".help\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    for cmd in [".help", ".kernel", ".exit"] {
        assert!(out.contains(cmd), "{cmd} missing from .help: {out}");
    }
}

#[test]
fn repl_meta_exit_leaves_and_the_kernel_keeps_running() {
    let home = Home::new("replexit");
    let pid = start_default(&home);
    let o = home.run(&["repl"], "print('before')\n.exit\nprint('after')\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "before\n");
    assert_eq!(kernel_processes(&home), vec![pid]);
}

#[test]
fn repl_runs_a_multi_line_block_once() {
    let home = Home::new("replmulti");
    let input = "n = 0\nfor i = 1, 3 do\n  n = n + 1\n  print('loop', i)\nend\nprint('n=' .. n)\n";
    let o = home.run(&["repl"], input);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "loop\t1\nloop\t2\nloop\t3\nn=3\n");
    assert_eq!(stderr(&o), "", "a line of the block ran on its own");
}

#[test]
fn repl_io_read_is_answered_by_the_next_line() {
    let home = Home::new("replread");
    let input = "local l = io.read() print('got: ' .. l)\nthe answer\nprint('after')\n";
    let o = home.run(&["repl"], input);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "got: the answer\nafter\n");
    assert_eq!(stderr(&o), "", "the answer line must not run as Lua");
}

#[test]
fn repl_shows_expression_values() {
    let home = Home::new("replvalue");
    let o = home.run(&["repl"], "v = 6\nv * 7\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "42\n");
}

/// History is only written in interactive mode: drive the REPL through a pseudo-terminal with
/// `script(1)`. Skipped (passes with a note) if `script` is not installed.
#[test]
fn repl_on_a_terminal_writes_history() {
    let Some(script_bin) = ["/usr/bin/script", "/bin/script"].into_iter().find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: script(1) is not installed");
        return;
    };
    let home = Home::new("history");
    let shell_cmd = format!("'{BIN}' repl");
    let child = Command::new(script_bin)
        .args(["-qec", &shell_cmd, "/dev/null"])
        .env("LLMSPELL_HOME", &home.dir)
        .env_remove("LLMSPELL_IDLE_TIMEOUT")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut repl = Guard(Some(child));
    let mut input = repl.child().stdin.take().unwrap();
    let out_rx = {
        // The terminal output has no reliable line ends: accumulate raw bytes.
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut out = repl.child().stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let _err = collector(repl.child().stderr.take().unwrap());
    let mut seen = String::new();
    let mut wait_for = |what: &str| {
        let deadline = Instant::now() + LONG;
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match out_rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no {what:?} on the terminal; saw {seen:?}"),
            }
        }
    };
    wait_for("In [1]:");
    input.write_all(b"hist_var = 12345\r").unwrap();
    wait_for("In [2]:");
    input.write_all(b"print(hist_var + 1)\r").unwrap();
    wait_for("12346");
    wait_for("In [3]:");
    input.write_all(b"\x04").unwrap(); // Ctrl-D leaves
    let status = repl.wait(LONG);
    assert!(status.success(), "{status:?}");
    let history = std::fs::read_to_string(home.path("history")).expect("$LLMSPELL_HOME/history was written");
    assert!(history.contains("hist_var = 12345"), "{history:?}");
    assert!(history.contains("print(hist_var + 1)"), "{history:?}");
}

#[test]
fn ctrl_c_in_a_queued_exec_withdraws_it_and_leaves_the_running_cell_alone() {
    let home = Home::new("queuedctrlc");
    start_default(&home);
    let gate = home.path("gate").to_string_lossy().into_owned();
    let started = home.path("started").to_string_lossy().into_owned();
    let long =
        format!("io.open({started:?}, 'w'):close() while not io.open({gate:?}) do end print('a done')");
    let mut a = spawn(&home, &["exec", &long]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "A's cell never started");
    let mut b = spawn(&home, &["exec", "b_ran = true"]);
    // B's request waits behind A's cell; give it a moment to be sent (if SIGINT comes sooner, B
    // dies before sending, and the assertions below hold all the same).
    std::thread::sleep(Duration::from_millis(500));
    sigint(b.pid());
    let status = b.wait(LONG);
    assert!(status.code() == Some(130) || status.signal() == Some(libc::SIGINT), "{status:?}");
    assert!(a.child().try_wait().unwrap().is_none(), "B's Ctrl-C ended A's cell");
    std::fs::write(&gate, "").unwrap();
    assert!(a.wait(LONG).success());
    assert_eq!(ok(&home, &["exec", "print(b_ran)"]), "nil\n", "the withdrawn request ran anyway");
}

#[test]
fn a_killed_exec_client_ends_its_cell_and_the_kernel_serves_the_next_one() {
    let home = Home::new("killedexec");
    start_default(&home);
    let started = home.path("started").to_string_lossy().into_owned();
    let forever = format!("io.open({started:?}, 'w'):close() while true do end");
    let mut client = spawn(&home, &["exec", &forever]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "the cell never started");
    // SAFETY: kill(2) on a child this test spawned and still holds.
    unsafe { libc::kill(client.pid(), libc::SIGKILL) };
    client.wait(LONG);
    assert_eq!(ok(&home, &["exec", "print(1 + 1)"]), "2\n");
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
fn global_options_stand_anywhere_and_double_dash_ends_them() {
    let home = Home::new("options");
    assert_eq!(ok(&home, &["exec", "--kernel", "k2", "print(1 + 1)"]), "2\n");
    assert_eq!(ok(&home, &["exec", "--kernel=k2", "--", "print(-1)"]), "-1\n");
    assert!(home.kernel_pid("k2").is_some(), "--kernel after exec was not taken as the kernel id");
    assert!(home.kernel_pid("default").is_none(), "a default kernel was started");
    let script = script(&home, "args.lua", "print(arg[1], arg[2])");
    assert_eq!(ok(&home, &["run", "--kernel", "k2", &script, "--kernel", "x"]), "--kernel\tx\n");
}

#[test]
fn exec_dash_reads_the_code_from_stdin() {
    let home = Home::new("execstdin");
    let out = home.run(&["exec", "-"], "print('from stdin')\nreturn 6 * 7\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "from stdin\n42\n");
}

#[test]
fn a_mistyped_command_gets_a_suggestion_and_exit_2() {
    let home = Home::new("typo");
    let out = output_of(home.cmd(&["exce", "1"]), LONG);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("did you mean `exec`?"), "{}", show(&out));
}

#[test]
fn kernel_status_says_busy_or_idle_and_kernel_interrupt_stops_the_cell() {
    let home = Home::new("statusbusy");
    start_default(&home);
    let started = home.path("started").to_string_lossy().into_owned();
    let mut cell = spawn(&home, &["exec", &format!("io.open({started:?}, 'w'):close() while true do end")]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "the cell never started");
    let status = ok(&home, &["kernel", "status"]);
    assert!(status.contains("busy") && status.contains(&format!("client pid {}", cell.pid())), "{status}");
    let list = ok(&home, &["kernel", "list"]);
    assert!(list.contains("busy"), "{list}");
    let out = output_of(home.cmd(&["kernel", "interrupt"]), LONG);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(cell.wait(LONG).code(), Some(130));
    assert!(ok(&home, &["kernel", "status"]).contains("idle"));
}

#[test]
fn kernel_stop_of_a_kernel_that_is_not_running_exits_1() {
    let home = Home::new("stopnosuch");
    let out = output_of(home.cmd(&["kernel", "stop", "nosuch"]), LONG);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(stderr(&out).contains("not running"), "{}", show(&out));
}

#[test]
fn exit_and_quit_leave_the_repl_and_a_users_own_exit_is_left_alone() {
    let home = Home::new("replexit");
    let out = home.run(&["repl"], "x = 5\nprint(x)\nexit\nprint('not reached')\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "5\n");
    let out = home.run(&["repl"], "quit()\nprint('not reached')\n");
    assert_eq!(stdout(&out), "");
    let out = home.run(&["repl"], "exit = 3\nprint(exit)\n");
    assert_eq!(stdout(&out), "3\n");
}

#[test]
fn an_unfinished_expression_continues_in_the_repl() {
    let home = Home::new("replcont");
    let out = home.run(&["repl"], "1 +\n2\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "3\n");
}

#[test]
fn the_first_command_after_an_idle_timeout_says_once_that_the_session_is_new() {
    let home = Home::new("idlenotice");
    ok(&home, &["--idle-timeout", "2", "exec", "x = 1 state.set('kept', 7)"]);
    assert_idle_exit(&home);
    let first = output_of(home.cmd(&["exec", "print(x, state.get('kept'))"]), LONG);
    assert!(first.status.success(), "{}", show(&first));
    assert_eq!(stdout(&first), "nil\t7\n");
    assert!(
        stderr(&first).contains("idle timeout") && stderr(&first).contains("new session"),
        "{}",
        show(&first)
    );
    let second = output_of(home.cmd(&["exec", "print(1)"]), LONG);
    assert_eq!(stderr(&second), "", "the notice was given twice");
}

#[test]
fn dead_kernels_leave_no_files_behind_and_old_logs_go() {
    let home = Home::new("sweep");
    start_default(&home);
    let dir = home.kernels_dir();
    for name in ["gone.json", "gone.lock", "gone.spawn", "gone.run", "gone.log", "ancient.log"] {
        std::fs::write(dir.join(name), "").unwrap();
    }
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(dir.join("ancient.log"))
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    let list = ok(&home, &["kernel", "list"]);
    assert!(list.contains("default") && !list.contains("gone"), "{list}");
    let left = kernel_files(&home);
    for gone in ["gone.json", "gone.lock", "gone.spawn", "gone.run", "ancient.log"] {
        assert!(!left.iter().any(|f| f == gone), "{gone} was left: {left:?}");
    }
    assert!(left.iter().any(|f| f == "gone.log"), "a recent log of a dead kernel is kept a day: {left:?}");
    assert!(left.iter().any(|f| f == "default.json"), "the live kernel's files were swept: {left:?}");
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

#[test]
fn a_name_followed_by_a_question_mark_shows_its_documentation() {
    let home = Home::new("question");
    let doc = ok(&home, &["exec", "string.format?"]);
    assert!(doc.contains("string.format(formatstring, ...)"), "{doc}");
    assert_eq!(ok(&home, &["exec", "no_such_name?"]), "Object `no_such_name` not found.\n");
}

#[test]
fn looking_at_kernels_creates_no_home_directory() {
    let home = Home::new("lookonly");
    std::fs::remove_dir_all(&home.dir).unwrap();
    for (args, code) in [
        (&["kernel", "list"][..], 0),
        (&["kernel", "stop", "--all"][..], 0),
        (&["kernel", "stop"][..], 1),
        (&["kernel", "status", "k2"][..], 1),
        (&["kernel", "interrupt"][..], 1),
    ] {
        let out = home.run(args, "");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(!home.dir.exists(), "{args:?} created {}", home.dir.display());
    }
}
