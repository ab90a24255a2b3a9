//! `llmspell kernel start / list / status / stop / interrupt`.

use super::*;

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
