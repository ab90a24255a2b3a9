//! Runs beside each other and beside session cells: progress, the runner socket, idle timeouts,
//! stalled clients, kernels from connection files, concurrent first runs.

use super::*;

#[test]
fn four_runs_make_progress_at_once() {
    let home = Home::new("run-four");
    let dir = case_dir(
        &home,
        &Case::new(
            "four",
            "local me = arg[1]\nio.open('here' .. me, 'w'):close()\n\
             local function all() for i = 1, 4 do local f = io.open('here' .. i) if not f then return false end f:close() end return true end\n\
             while not all() do os.execute('sleep 0.02') end\nprint('passed the barrier', me)",
        ),
    );
    let mut children: Vec<Child> =
        (1..=4).map(|i| spawn_in(BIN, &home, &dir, &["script.lua", &i.to_string()])).collect();
    let all_done =
        wait_until(Duration::from_secs(120), || children.iter_mut().all(|c| c.try_wait().unwrap().is_some()));
    for c in &mut children {
        let _ = c.kill();
    }
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    assert!(all_done, "not all four runs passed the barrier: {outs:?}");
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(stdout(o), format!("passed the barrier\t{}\n", i + 1), "{o:?}");
    }
}

#[test]
fn the_runner_socket_is_private_and_a_missing_kernel_is_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new("run-sock");
    let dir = case_dir(&home, &Case::new("sock", "print('ok')"));
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ok\n");
    let meta = std::fs::metadata(home.kernels_dir().join("default.run")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A copy of the connection file elsewhere finds the same kernel's runner (by its key) ...
    let elsewhere = home.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let text = std::fs::read_to_string(home.kernels_dir().join("default.json")).unwrap();
    write_file(&elsewhere, "copy.json", &text);
    let copy = elsewhere.join("copy.json");
    let o = llmspell_in(&home, &dir, &["--connect", copy.to_str().unwrap(), "run", "script.lua"]);
    assert_eq!(stdout(&o), "ok\n", "{o:?}");
    // ... and one whose kernel has no runner is one line, exit 1.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["key"] = "not-the-key".into();
    write_file(&elsewhere, "other.json", &v.to_string());
    let other = elsewhere.join("other.json");
    let o = llmspell_in(&home, &dir, &["--connect", other.to_str().unwrap(), "run", "script.lua"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{o:?}");
}

#[test]
fn a_run_does_not_wait_for_a_busy_session_cell() {
    let home = Home::new("run-busy");
    let dir = case_dir(&home, &Case::new("busy", "io.open(arg[1], 'w'):close() print('run done')"));
    let flag = dir.join("flag");
    // The cell spins until the run has created the flag: if runs queued behind cells, neither ends.
    let cell = format!("while not io.open({:?}) do end print('cell done')", flag.to_str().unwrap());
    let mut c = base_command(BIN, &home, &dir);
    c.args(["exec", "x = 1"]);
    assert!(run_with_stdin(c, "").status.success());
    let mut session = base_command(BIN, &home, &dir);
    session.args(["exec", &cell]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let session = session.spawn().unwrap();
    let run = llmspell_in(&home, &dir, &["run", "script.lua", flag.to_str().unwrap()]);
    assert_eq!(stdout(&run), "run done\n", "{run:?}");
    assert_eq!(stdout(&wait_output(session, Duration::from_secs(120))), "cell done\n");
}

#[test]
fn a_run_longer_than_the_idle_timeout_keeps_its_kernel() {
    let home = Home::new("run-idle");
    let dir = case_dir(&home, &Case::new("idle", "os.execute('sleep 5') print('still here')"));
    let out = llmspell_in(&home, &dir, &["--idle-timeout", "2", "run", "script.lua"]);
    assert_eq!(stdout(&out), "still here\n", "{out:?}");
    assert!(out.status.success());
    // Once idle, the kernel (and its zygote with it) goes.
    let lock = home.kernels_dir().join("default.run");
    assert!(
        wait_until(Duration::from_secs(60), || !lock.exists()),
        "the kernel did not time out after the run"
    );
}

#[test]
fn a_stalled_client_does_not_hold_up_other_runs() {
    use std::io::Write;
    let home = Home::new("run-stall");
    let dir = case_dir(&home, &Case::new("stall", "print('ran')"));
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ran\n");
    // Half a request, then silence: the zygote must go on serving.
    let mut stalled =
        std::os::unix::net::UnixStream::connect(home.kernels_dir().join("default.run")).unwrap();
    stalled.write_all(b"LSR1\x10").unwrap();
    let mut idle = std::os::unix::net::UnixStream::connect(home.kernels_dir().join("default.run")).unwrap();
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ran\n");
    // Garbage gets a one-line refusal, not a run.
    idle.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut idle, &mut reply).unwrap();
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    drop(stalled);
}

#[test]
fn a_kernel_launched_from_a_connection_file_serves_runs_too() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new("run-jup");
    let dir = case_dir(&home, &Case::new("jup", "print('ran', os.getenv('JUP'))"));
    // Borrow free ports from a kernel of ours, then launch one the way Jupyter does.
    assert!(llmspell_in(&home, &dir, &["kernel", "start", "--daemon", "--id", "src"]).status.success());
    let text = std::fs::read_to_string(home.kernels_dir().join("src.json")).unwrap();
    llmspell_in(&home, &dir, &["kernel", "stop", "src"]);
    let conn = write_file(&home.dir, "jupyter-conn.json", &text);
    std::fs::set_permissions(&conn, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conn = conn.to_str().unwrap().to_string();
    let mut kernel = base_command(BIN, &home, &dir);
    kernel.args(["kernel", "start", "--connection-file", &conn]).stdin(Stdio::null()).stdout(Stdio::null());
    let mut kernel = kernel.stderr(Stdio::null()).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            llmspell_in(&home, &dir, &["--connect", &conn, "exec", "x = 1"]).status.success()
        }),
        "the kernel did not come up"
    );
    let mut c = base_command(BIN, &home, &dir);
    c.args(["--connect", &conn, "run", "script.lua"]).env("JUP", "yes");
    let o = run_with_stdin(c, "");
    assert_eq!(stdout(&o), "ran\tyes\n", "{o:?}");
    signal(&kernel, libc::SIGTERM);
    kernel.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(home.kernels_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("key-"))
        .collect();
    assert!(left.is_empty(), "the runner socket outlived its kernel: {left:?}");
}

#[test]
fn concurrent_first_runs_all_find_the_one_kernel_they_start() {
    for round in 0..3 {
        let home = Home::new(&format!("run-first{round}"));
        let dir = case_dir(&home, &Case::new("first", "print('ran')"));
        let children: Vec<Child> = (0..8).map(|_| spawn_in(BIN, &home, &dir, &["script.lua"])).collect();
        for c in children {
            let o = wait_output(c, Duration::from_secs(120));
            assert_eq!(stdout(&o), "ran\n", "{o:?}");
        }
    }
}
