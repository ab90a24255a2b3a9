//! Finding or starting the kernel: one auto-started kernel, reuse, kill -9, idle timeouts, --connect.

use super::*;

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
    let log = || std::fs::read_to_string(home.kernels_dir().join("default.log")).unwrap_or_default();
    for o in &outputs {
        assert_eq!(code(o), 0, "a concurrent first exec failed: {}\nkernel log:\n{}", show(o), log());
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
