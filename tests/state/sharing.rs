//! Sharing and durability across clients (repl, run, kernels), `kernel stop` and kill -9.

use super::*;

// ------------------------------------------------------------------------------------------------
// Sharing and durability across clients, stops and kill -9
// ------------------------------------------------------------------------------------------------

#[test]
fn repl_sets_run_reads_across_stop_and_kill() {
    let home = Home::new("state-repl-run");
    let out = ok(
        &home,
        &["repl"],
        "state.set(\"from_repl\", {list = {1, 2, 3}, flag = true, name = \"repl\", f = 1.0})\nrepl_global = 7\n",
    );
    assert!(!out.contains("Error"), "{out}");
    let reader = r#"
        local v = state.get("from_repl")
        check(v, {list = {1, 2, 3}, flag = true, name = "repl", f = 1.0}, "from_repl")
        check(repl_global, nil, "run has fresh globals")
        print("read ok")
    "#;
    assert!(script_ok(&home, "default", "read1.lua", reader).contains("read ok"));
    let first = home.kernel_pid("default").unwrap();

    // A clean stop, then a new kernel.
    ok(&home, &["kernel", "stop"], "");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(first)),
        "kernel {first} still running after stop"
    );
    assert_eq!(home.run(&["kernel", "status"], "").status.code(), Some(1), "no kernel after stop");
    assert!(script_ok(&home, "default", "read2.lua", reader).contains("read ok"));
    let second = home.kernel_pid("default").unwrap();
    assert_ne!(first, second, "a new kernel was started");

    // Values set in cells that replied survive kill -9, whichever client set them.
    ok(&home, &["repl"], "state.set(\"repl2\", \"x\")\n");
    ok(&home, &["exec", r#"state.set("exec1", {a = "b"})"#], "");
    script_ok(&home, "default", "set.lua", r#"state.set("run1", 2.5)"#);
    ok(&home, &["exec", r#"state.set("exec2", 3); state.delete("repl2")"#], "");
    assert_eq!(kill9(&home, "default"), second);
    let out = script_ok(
        &home,
        "default",
        "read3.lua",
        &format!(
            r#"{reader}
            check(state.get("exec1"), {{a = "b"}}, "exec1")
            check(state.get("run1"), 2.5, "run1")
            check(state.get("exec2"), 3, "exec2")
            check(state.get("repl2"), nil, "repl2 deleted")
            print("after kill ok")
            "#
        ),
    );
    assert!(out.contains("after kill ok"), "{out}");
    assert_ne!(home.kernel_pid("default").unwrap(), second, "a new kernel after kill -9");
}

#[test]
fn run_scripts_share_state_across_runs_and_kernels() {
    let home = Home::new("state-run-share");
    script_ok(&home, "default", "a.lua", r#"state.set("shared", {count = 1, who = {"a"}}); leaked = true"#);
    script_ok(
        &home,
        "default",
        "b.lua",
        r#"
        check(leaked, nil, "fresh globals")
        local v = state.get("shared")
        check(v, {count = 1, who = {"a"}}, "shared in b")
        v.count = v.count + 1; v.who[#v.who + 1] = "b"
        state.set("shared", v)
        "#,
    );
    // A different kernel sees what the first one committed, and the first sees its change.
    script_ok(
        &home,
        "other",
        "c.lua",
        r#"
        local v = state.get("shared")
        check(v, {count = 2, who = {"a", "b"}}, "shared in kernel other")
        v.count = 3; v.who[3] = "c"
        state.set("shared", v)
        "#,
    );
    script_ok(
        &home,
        "default",
        "d.lua",
        r#"check(state.get("shared"), {count = 3, who = {"a", "b", "c"}}, "shared back in default")"#,
    );
    assert_ne!(home.kernel_pid("default"), home.kernel_pid("other"), "two kernels");
}
