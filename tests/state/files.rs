//! Corrupt and insecure files: repair, refused writable files, private modes, exports.

use super::*;

// ------------------------------------------------------------------------------------------------
// Corrupt and insecure files
// ------------------------------------------------------------------------------------------------

#[test]
fn corrupt_state_file_fails_state_calls_and_repair_fixes_it() {
    let home = Home::new("state-corrupt");
    ok(&home, &["state", "path"], ""); // makes the home private
    let path = state_path(&home);
    let garbage: &[u8] = b"{\"a\": 1,\n\"b\": \xff garbage";
    std::fs::write(&path, garbage).unwrap();
    chmod(&path, 0o600);
    let shown = path.display().to_string();

    let o = failing_cell(&home, "default", r#"return state.get("a")"#);
    let err = stderr(&o);
    assert!(err.contains(&format!("state.get: state file {shown} is corrupt")), "{err}");
    assert!(err.contains("not valid JSON"), "the problem is named: {err}");
    assert!(err.contains("llmspell state repair"), "{err}");
    let pid = home.kernel_pid("default").unwrap();

    // The kernel keeps serving; every state call fails naming the file; nothing is written.
    ok(&home, &["exec", "x = 6 * 7"], "");
    assert_eq!(ok(&home, &["exec", "return x"], "").trim(), "42");
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local calls = {{
              set = function() return state.set("b", 2) end,
              get = function() return state.get("a", 0) end,
              delete = function() return state.delete("a") end,
              keys = function() return state.keys() end,
              clear = function() return state.clear() end,
              update = function() return state.update("a", function(v) return 1 end) end,
            }}
            for name, f in pairs(calls) do
              local ok, msg = pcall(f)
              assert(not ok, "state." .. name .. " worked on a corrupt file")
              assert(tostring(msg):find("state." .. name .. ": state file {shown} is corrupt", 1, true), tostring(msg))
            end
            print("all refused")
            "#
        ),
    );
    assert!(out.contains("all refused"), "{out}");
    failing_cell(&home, "default", r#"state.set("b", 2)"#);
    assert_eq!(home.kernel_pid("default"), Some(pid), "the same kernel serves on");
    assert!(process_alive(pid));
    for args in
        [&["state", "get", "a"][..], &["state", "set", "b", "2"], &["state", "list"], &["state", "export"]]
    {
        let o = home.run(args, "");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", out_text(&o));
        assert!(stderr(&o).contains(&shown) && stderr(&o).contains("corrupt"), "{args:?}: {}", out_text(&o));
    }
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the corrupt file was modified");
    let written: BTreeSet<String> =
        // kernel-history/ is the kernel's own cell history (issue 24), not a file of the store.
        home_files(&home).into_iter().filter(|n| n != "state.json.lock" && n != "kernel-history").collect();
    assert_eq!(
        written,
        BTreeSet::from(["state.json".into()]),
        "no other file (not even a temporary one) written"
    );

    // repair moves it aside; state works again in the same kernel and in a new one.
    let o = home.run(&["state", "repair"], "");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(!path.exists(), "repair left state.json in place");
    let aside: Vec<String> =
        home_files(&home).into_iter().filter(|n| n.starts_with("state.json.corrupt")).collect();
    assert_eq!(aside.len(), 1, "{:?}", home_files(&home));
    assert_eq!(std::fs::read(home.path(&aside[0])).unwrap(), garbage, "the file aside holds the old bytes");
    assert!(stderr(&o).contains(&aside[0]), "repair says where it went: {}", out_text(&o));
    cell(
        &home,
        "default",
        r#"state.set("b", 2); check(state.get("b"), 2, "b"); check(state.keys(), {"b"}, "keys")"#,
    );
    assert_eq!(Value::Object(state_file(&home)), json!({"b": 2}));
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.get("b"), 2, "b in a new kernel")"#);

    // Corrupted under a running kernel that had it cached: the same error, then repair.
    std::fs::write(&path, "[1, 2]").unwrap();
    let o = failing_cell(&home, "default", r#"return state.get("b")"#);
    assert!(stderr(&o).contains(&shown) && stderr(&o).contains("array"), "{}", out_text(&o));
    assert_eq!(std::fs::read(&path).unwrap(), b"[1, 2]");
    ok(&home, &["state", "repair"], "");
    cell(&home, "default", r#"check(state.keys(), {}, "empty after repair")"#);
}

#[test]
fn group_or_world_writable_state_file_is_refused() {
    let home = Home::new("state-insecure");
    cell(&home, "default", r#"state.set("a", 1)"#);
    let path = state_path(&home);
    let shown = path.display().to_string();
    for m in [0o666, 0o620, 0o602] {
        chmod(&path, m);
        let before = std::fs::read(&path).unwrap();
        let o = failing_cell(&home, "default", r#"return state.get("a")"#);
        let err = stderr(&o);
        assert!(err.contains(&format!("refusing to use {shown}")), "mode {m:o}: {err}");
        assert!(
            err.contains("writable by other users") && err.contains(&format!("{:03o}", m)),
            "mode {m:o}: {err}"
        );
        assert!(err.contains("chmod go-w"), "the fix is named: {err}");
        let o = failing_cell(&home, "default", r#"state.set("b", 2)"#);
        assert!(stderr(&o).contains("writable by other users"), "{}", out_text(&o));
        let o = home.run(&["state", "get", "a"], "");
        assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
        assert!(
            stderr(&o).contains(&shown) && stderr(&o).contains("writable by other users"),
            "{}",
            out_text(&o)
        );
        let o = home.run(&["state", "set", "c", "3"], "");
        assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
        assert_eq!(std::fs::read(&path).unwrap(), before, "an insecure file was written");
        assert_eq!(mode(&path), m, "the mode was changed behind the user's back");
        assert_eq!(ok(&home, &["exec", "return 1 + 1"], "").trim(), "2", "the kernel keeps serving");
    }
    chmod(&path, 0o600);
    cell(&home, "default", r#"check(state.get("a"), 1, "a after chmod go-w")"#);
}

/// A cell whose state changes could not be committed is told "state changes of this cell were not
/// saved"; those changes must then not be written behind the user's back by a later, unrelated cell.
#[test]
fn changes_reported_as_not_saved_are_not_written_later() {
    let home = Home::new("state-not-saved");
    cell(&home, "default", r#"state.set("a", 1)"#);
    let path = state_path(&home);
    chmod(&path, 0o666);
    let o = failing_cell(&home, "default", r#"state.set("z", 1)"#);
    assert!(stderr(&o).contains("state changes of this cell were not saved"), "{}", out_text(&o));
    chmod(&path, 0o600);
    ok(&home, &["exec", "x = 1"], "");
    assert_eq!(Value::Object(state_file(&home)), json!({"a": 1}), "the unsaved change was written later");
}

#[test]
fn state_file_is_private_pretty_json() {
    let home = Home::new("state-file");
    std::fs::remove_dir(&home.dir).unwrap(); // llmspell creates the home itself
    cell(&home, "default", r#"state.set("zeta", {list = {1, 2}, name = "z"}); state.set("alpha", "\255")"#);
    let path = state_path(&home);
    assert_eq!(mode(&path), 0o600, "state.json mode after a Lua write");
    assert_eq!(mode(&home.dir), 0o700, "LLMSPELL_HOME mode when llmspell created it");
    let text = std::fs::read_to_string(&path).expect("state.json is UTF-8 text");
    assert!(
        text.starts_with("{\n  \"alpha\": {\n    \"$base64\": \"/w==\"\n  },\n  \"zeta\": {\n"),
        "pretty, sorted, indented: {text}"
    );
    assert!(text.ends_with("}\n"), "ends with a newline: {text:?}");
    assert!(text.lines().count() > 8, "one item a line: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"alpha": {"$base64": "/w=="}, "zeta": {"list": [1, 2], "name": "z"}})
    );
    ok(&home, &["state", "set", "cli", r#"{"x": [1]}"#], "");
    assert_eq!(mode(&path), 0o600, "state.json mode after a CLI write");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\n  \"cli\": {\n    \"x\": [\n      1\n    ]\n  },\n"));
    cell(&home, "default", r#"state.update("u", function() return 1 end)"#);
    assert_eq!(mode(&path), 0o600, "state.json mode after an update");
    assert_eq!(state_file(&home).len(), 4);
}

#[test]
fn state_help_creates_nothing_and_exports_are_as_private_as_the_store() {
    let home = Home::new("statehelp");
    std::fs::remove_dir_all(&home.dir).unwrap();
    for args in [&["state", "--help"][..], &["state"][..]] {
        let out = home.run(args, "");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!home.dir.exists(), "{args:?} created {}", home.dir.display());
    }
    ok(&home, &["state", "set", "k", "1"], "");
    let export = home.path("export.json");
    ok(&home, &["state", "export", export.to_str().unwrap()], "");
    assert_eq!(mode(&export), 0o600, "state export wrote {:o}", mode(&export));
    assert!(std::fs::read_to_string(&export).unwrap().contains("\"k\": 1"));
}
