//! The `llmspell state` CLI and the Lua API seeing each other's writes.

use super::*;

// ------------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------------

#[test]
fn cli_and_lua_see_each_others_writes() {
    let home = Home::new("state-cli");
    // Lua writes (a kernel keeps running throughout).
    cell(
        &home,
        "default",
        r#"
        state.set("n", 1); state.set("f", 1.5); state.set("one", 1.0); state.set("s", "text")
        state.set("bytes", "\0\255\1"); state.set("nested", {a = {1, 2, {b = true}}})
        state.set("cfg.x", 1); state.set("cfg.y", 2)
        "#,
    );
    assert_eq!(cli_get(&home, "n"), json!(1));
    assert!(cli_get(&home, "n").is_i64());
    assert_eq!(ok(&home, &["state", "get", "one"], "").trim(), "1.0", "a float stays a float");
    assert!(cli_get(&home, "one").is_f64());
    assert_eq!(cli_get(&home, "f"), json!(1.5));
    assert_eq!(cli_get(&home, "s"), json!("text"));
    assert_eq!(cli_get(&home, "bytes"), json!({"$base64": "AP8B"}));
    assert_eq!(cli_get(&home, "nested"), json!({"a": [1, 2, {"b": true}]}));
    assert_eq!(cli_list(&home, None), ["bytes", "cfg.x", "cfg.y", "f", "n", "nested", "one", "s"]);
    assert_eq!(cli_list(&home, Some("cfg.")), ["cfg.x", "cfg.y"]);
    assert_eq!(cli_list(&home, Some("zzz")), Vec::<String>::new());
    let expected = json!({
        "bytes": {"$base64": "AP8B"}, "cfg.x": 1, "cfg.y": 2, "f": 1.5, "n": 1,
        "nested": {"a": [1, 2, {"b": true}]}, "one": 1.0, "s": "text"
    });
    let exported: Value = serde_json::from_str(&ok(&home, &["state", "export"], "")).expect("export is JSON");
    assert_eq!(exported, expected);
    let export_file = home.path("export.json");
    ok(&home, &["state", "export", export_file.to_str().unwrap()], "");
    let exported: Value = serde_json::from_slice(&std::fs::read(&export_file).unwrap()).unwrap();
    assert_eq!(exported, expected);

    // CLI writes, seen by the same running kernel (it had the file cached).
    ok(&home, &["state", "set", "n", "5"], "");
    ok(&home, &["state", "set", "fromcli", r#"{"list": [1, 2.0, "y"], "flag": false}"#], "");
    ok(&home, &["state", "set", "bin", r#"{"$base64": "AP8B"}"#], "");
    ok(&home, &["state", "set", "stdin", "-"], "[1, 2]\n");
    ok(&home, &["state", "set", "f", "null"], "");
    assert_eq!(ok(&home, &["state", "delete", "s"], ""), "");
    assert_eq!(home.run(&["state", "delete", "s"], "").status.code(), Some(1), "delete of a missing key");
    cell(
        &home,
        "default",
        r#"
        check(state.get("n"), 5, "n")
        check(state.get("fromcli"), {list = {1, 2.0, "y"}, flag = false}, "fromcli")
        check(state.get("bin"), "\0\255\1", "bin")
        check(state.get("stdin"), {1, 2}, "stdin")
        check(state.get("f"), nil, "f deleted by null")
        check(state.get("s"), nil, "s deleted")
        check(state.keys("cfg."), {"cfg.x", "cfg.y"}, "untouched keys")
        "#,
    );

    // import merges (null deletes), and Lua sees it.
    let import =
        write_file(&home.dir, "import.json", r#"{"imp1": 1, "imp2": {"a": "b"}, "n": null, "one": 2.0}"#);
    ok(&home, &["state", "import", import.to_str().unwrap()], "");
    cell(
        &home,
        "default",
        r#"
        check(state.get("imp1"), 1, "imp1"); check(state.get("imp2"), {a = "b"}, "imp2")
        check(state.get("n"), nil, "n deleted by import"); check(state.get("one"), 2.0, "one")
        check(state.get("nested"), {a = {1, 2, {b = true}}}, "nested kept")
        state.set("luaafter", "L")
        "#,
    );
    assert_eq!(cli_get(&home, "luaafter"), json!("L"));

    // Bad input: exit 2, one line, nothing changed; a missing key: exit 1, no output.
    let before = std::fs::read(state_path(&home)).unwrap();
    let o = home.run(&["state", "set", "k", "not json"], "");
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "one-line error: {:?}", stderr(&o));
    assert!(stderr(&o).contains("JSON"), "{}", out_text(&o));
    assert_eq!(stdout(&o), "");
    let o = home.run(&["state", "set", "k", "{\"a\": 1"], "");
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "one-line error: {:?}", stderr(&o));
    let o = home.run(&["state", "get", "missing"], "");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert_eq!(stdout(&o), "");
    let o = home.run(&["state", "set", "", "1"], "");
    assert!(!o.status.success(), "an empty key is refused: {}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "failed commands changed the file");

    // clear
    ok(&home, &["state", "clear"], "");
    assert_eq!(cli_list(&home, None), Vec::<String>::new());
    cell(&home, "default", r#"check(state.keys(), {}, "keys after CLI clear")"#);
    assert_eq!(Value::Object(state_file(&home)), json!({}));
    assert!(home.kernel_pid("default").is_some_and(process_alive), "the kernel ran throughout");
}
