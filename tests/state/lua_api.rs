//! The `state` Lua API: set/get/delete/keys/clear/update, every value kind across a kernel restart,
//! refused values and keys.

use super::*;

// ------------------------------------------------------------------------------------------------
// Lua API
// ------------------------------------------------------------------------------------------------

#[test]
fn lua_set_get_delete_keys_clear_update() {
    let home = Home::new("state-api");
    // Everything in one cell sees its own pending changes.
    cell(
        &home,
        "default",
        r#"
        state.set("b", 2); state.set("a", 1); state.set("c.2", 22); state.set("c.1", 21); state.set("ca", 3)
        check(state.keys(), {"a", "b", "c.1", "c.2", "ca"}, "keys() sorted")
        check(state.keys("c."), {"c.1", "c.2"}, "keys('c.')")
        check(state.keys("c"), {"c.1", "c.2", "ca"}, "keys('c')")
        check(state.keys("zz"), {}, "keys('zz')")
        check(state.get("a"), 1, "get a")
        check(state.get("missing"), nil, "get missing")
        check(state.get("missing", "dflt"), "dflt", "get with default")
        check(state.get("a", 99), 1, "get present with default")
        state.set("no", false)
        check(state.get("no", true), false, "a stored false is not replaced by the default")
        check(state.delete("b"), true, "delete existing")
        check(state.delete("b"), false, "delete again")
        check(state.delete("never"), false, "delete never set")
        check(state.update("ctr", function(old) check(old, nil, "update old"); return 1 end), 1, "update new")
        check(state.update("ctr", function(old) return old + 1 end), 2, "update increments")
        check(state.get("ctr"), 2, "get after update")
        check(state.update("gone", function(old) return nil end), nil, "update to nil")
        "#,
    );
    // The next cell sees the committed result; deleting a committed key reports it existed.
    cell(
        &home,
        "default",
        r#"
        check(state.keys(), {"a", "c.1", "c.2", "ca", "ctr", "no"}, "committed keys")
        check(state.update("ctr", function(old) return old * 10 end), 20, "update committed")
        check(state.update("ctr", function(old) return nil end), nil, "update deletes")
        check(state.get("ctr"), nil, "deleted by update")
        check(state.delete("ca"), true, "delete committed")
        check(state.delete("ca"), false, "delete committed again")
        "#,
    );
    let file = state_file(&home);
    assert_eq!(file.keys().collect::<Vec<_>>(), ["a", "c.1", "c.2", "no"]);
    // Another writer's change is seen by update and get in the running kernel.
    ok(&home, &["state", "set", "ctr", "10"], "");
    cell(
        &home,
        "default",
        r#"check(state.update("ctr", function(v) return v + 1 end), 11, "update after CLI")"#,
    );
    // clear removes everything, sets after it in the same cell apply.
    cell(
        &home,
        "default",
        r#"
        state.clear()
        check(state.keys(), {}, "keys after clear")
        check(state.get("a"), nil, "get after clear")
        state.set("after", 1)
        check(state.keys(), {"after"}, "keys after clear and set")
        "#,
    );
    assert_eq!(Value::Object(state_file(&home)), json!({"after": 1}));
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.keys(), {"after"}, "keys in a new kernel")"#);
}

/// The values of every storable kind; defined once, set by one kernel and compared by the next.
const VALUES: &str = r#"
local all = {}
for i = 0, 255 do all[#all + 1] = string.char(i) end
local V = {
  t = true, f = false,
  i = 42, neg = -7, zero = 0, imax = math.maxinteger, imin = math.mininteger,
  one = 1.0, tenth = 0.1, negzero = -0.0, third = 1 / 3, big = 1e300, tiny = 5e-324,
  f2p53 = 2.0 ^ 53, f2p63 = 2.0 ^ 63, negf = -2.5,
  s = "hello", empty = "", bytes = "\0\255\1", bad_utf8 = "\xff\xfe\xc3(", all = table.concat(all),
  unicode = "héllo ✓ 日本", tagged_text = '{"$base64": "AA=="}', dollar = "$base64",
  arr = {1, 2.5, "x", false, {3, {4.0}}, "\0"},
  map = {a = {b = {c = "d"}}, ["with space"] = 1, [""] = "empty inner key", bin = "\255"},
  two_keys_with_tag = {["$base64"] = "AA==", other = 1},
  emptyt = {},
  arr_of_maps = {{k = 1}, {k = 2.0}},
}
"#;

#[test]
fn every_value_kind_round_trips_through_a_kernel_restart() {
    let home = Home::new("state-values");
    cell(&home, "default", r#"state.set("gone", 1); state.set("gone2", 2)"#);
    cell(
        &home,
        "default",
        &format!(
            r#"{VALUES}
            for k, v in pairs(V) do state.set(k, v) end
            state.set("gone", nil)                            -- nil deletes (committed key)
            state.set("gone2", {{}}); state.set("gone2", nil) -- nil deletes (pending key)
            -- the same cell already reads them back exactly
            for k, v in pairs(V) do check(state.get(k), v, "pending " .. k) end
            check(state.get("gone"), nil, "gone")
            "#
        ),
    );
    let file = state_file(&home);
    assert!(!file.contains_key("gone") && !file.contains_key("gone2"), "nil must delete: {file:?}");
    assert!(file["i"].is_i64() && file["imax"].is_i64(), "integers are JSON integers");
    assert!(file["one"].is_f64() && file["f2p53"].is_f64(), "floats are JSON floats");
    let text = std::fs::read_to_string(state_path(&home)).unwrap();
    assert!(text.contains("\"one\": 1.0"), "1.0 is written as a float: {text}");
    assert_eq!(file["bytes"], json!({"$base64": "AP8B"}));

    ok(&home, &["kernel", "stop"], "");
    let out = cell(
        &home,
        "default",
        &format!(
            r#"{VALUES}
            for k, v in pairs(V) do check(state.get(k), v, k) end
            local n = 0
            for _ in pairs(V) do n = n + 1 end
            check(#state.keys(), n, "number of keys")
            check(state.get("gone"), nil, "gone")
            check(state.get("gone2"), nil, "gone2")
            check(math.type(state.get("i")), "integer", "math.type(i)")
            check(math.type(state.get("imax")), "integer", "math.type(imax)")
            check(math.type(state.get("one")), "float", "math.type(one)")
            check(math.type(state.get("tenth")), "float", "math.type(tenth)")
            assert(state.get("one") == 1.0 and state.get("tenth") == 0.1, "exact floats")
            check(1 / state.get("negzero"), -math.huge, "sign of -0.0")
            assert(state.get("bytes") == "\0\255\1", "bytes")
            assert(state.get("bad_utf8") == "\xff\xfe\xc3(", "invalid UTF-8")
            assert(#state.get("all") == 256, "all bytes")
            check(math.type(state.get("arr")[5][2][1]), "float", "nested float")
            print("values ok")
            "#
        ),
    );
    assert!(out.contains("values ok"), "{out}");
}

/// A refused value or key raises a Lua error naming the key and the offending path, and changes
/// nothing: not the value, not the file.
#[test]
fn unstorable_values_are_refused_naming_key_and_path() {
    let home = Home::new("state-refuse");
    cell(&home, "default", r#"state.set("cfg", {ok = true}); state.set("keep", 1)"#);
    let before = std::fs::read(state_path(&home)).unwrap();
    let data = home.path("some-file.txt");
    std::fs::write(&data, "x").unwrap();
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local f = assert(io.open("{data}"))
            assert(io.type(f) == "file" and type(f) == "userdata")
            local cyc = {{a = {{}}}}; cyc.a.back = cyc
            local self_ref = {{}}; self_ref.self = self_ref
            local deep = {{}}; local d = deep
            for i = 1, 200 do d.n = {{}}; d = d.n end
            local cases = {{
              {{ {{a = {{b = print}}}}, 'value.a.b is a function' }},
              {{ print, 'value is a function' }},
              {{ {{a = {{b = coroutine.create(function() end)}}}}, 'value.a.b is a thread' }},
              {{ {{a = {{b = f}}}}, 'value.a.b is a userdata' }},
              {{ f, 'value is a userdata' }},
              {{ {{x = 0 / 0}}, 'value.x is NaN' }},
              {{ 0 / 0, 'value is NaN' }},
              {{ math.huge, 'value is inf' }},
              {{ {{list = {{1, -math.huge}}}}, 'value.list[2] is -inf' }},
              {{ cyc, 'value.a.back' }},
              {{ self_ref, 'value.self' }},
              {{ {{1, 2, a = 3}}, 'value mixes' }},
              {{ {{m = {{1, a = 2}}}}, 'value.m mixes' }},
              {{ {{1, nil, 3}}, 'value[2] is nil' }},
              {{ {{[1] = 1, [3] = 3}}, 'key "cfg": value' }},
              {{ {{[true] = 1}}, 'value has the key' }},
              {{ {{[1.5] = 1}}, 'value has the key 1.5' }},
              {{ {{[0] = "z"}}, 'value has the key 0' }},
              {{ {{x = {{[print] = 1}}}}, 'value.x has the key' }},
              {{ {{n = {{1, {{f = print}}}}}}, 'value.n[2].f is a function' }},
              {{ {{["a b"] = {{print}}}}, 'value["a b"][1] is a function' }},
              {{ {{["$base64"] = "AA=="}}, '$base64' }},
              {{ deep, 'key "cfg": value.n.n' }},
            }}
            for i, case in ipairs(cases) do
              local ok, msg = pcall(state.set, "cfg", case[1])
              assert(not ok, "case " .. i .. " was accepted: " .. case[2])
              assert(type(msg) == "string", "case " .. i .. ": error is a " .. type(msg))
              assert(msg:find('state.set: key "cfg": ', 1, true), "case " .. i .. " does not name the key: " .. msg)
              assert(msg:find(case[2], 1, true), "case " .. i .. ": want " .. case[2] .. " in: " .. msg)
              check(state.get("cfg"), {{ok = true}}, "cfg after case " .. i)
            end
            -- update refuses what its function returns, and a failing function changes nothing
            local ok, msg = pcall(state.update, "cfg", function(old) return {{f = print}} end)
            assert(not ok and msg:find('key "cfg"', 1, true) and msg:find('value.f is a function', 1, true), tostring(msg))
            ok, msg = pcall(state.update, "cfg", function(old) return 0 / 0 end)
            assert(not ok and msg:find('key "cfg"', 1, true) and msg:find('NaN', 1, true), tostring(msg))
            ok, msg = pcall(state.update, "cfg", function(old) error("inside update") end)
            assert(not ok and tostring(msg):find("inside update", 1, true), tostring(msg))
            check(state.get("cfg"), {{ok = true}}, "cfg after refused updates")
            check(state.keys(), {{"cfg", "keep"}}, "keys after refusals")
            f:close()
            print("refusals ok")
            "#,
            data = data.display()
        ),
    );
    assert!(out.contains("refusals ok"), "{out}");
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "refused values changed the file");

    // Unprotected, the refusal is the cell's error, naming key and path; nothing is written.
    let o = failing_cell(&home, "default", r#"state.set("cfg", {a = {b = function() end}})"#);
    assert!(stderr(&o).contains(r#"state.set: key "cfg": value.a.b is a function"#), "{}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "a refused set changed the file");
    // The same through `run`: the error points at the script's line.
    let o = script(
        &home,
        "default",
        "refuse.lua",
        "local x = 1\nstate.set(\"cfg\", {a = {b = print}})\n",
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(stderr(&o).contains(r#"state.set: key "cfg": value.a.b is a function"#), "{}", out_text(&o));
    assert_eq!(
        std::fs::read(state_path(&home)).unwrap(),
        before,
        "a refused set in a script changed the file"
    );
}

#[test]
fn bad_keys_are_refused_with_a_clear_error() {
    let home = Home::new("state-keys");
    cell(&home, "default", r#"state.set("keep", 1)"#);
    let before = std::fs::read(state_path(&home)).unwrap();
    let out = cell(
        &home,
        "default",
        r#"
        local bad = {
          {"", "empty"},
          {1, "got integer"},
          {1.5, "got number"},
          {true, "got boolean"},
          {{}, "got table"},
          {print, "got function"},
          {string.rep("k", 4097), "4097 bytes"},
          {"\xff", "UTF-8"},
        }
        local fns = {
          set = function(k) return state.set(k, 1) end,
          get = function(k) return state.get(k) end,
          delete = function(k) return state.delete(k) end,
          update = function(k) return state.update(k, function() return 1 end) end,
        }
        for i, case in ipairs(bad) do
          for name, f in pairs(fns) do
            local ok, msg = pcall(f, case[1])
            assert(not ok, "state." .. name .. " accepted bad key " .. i)
            msg = tostring(msg)
            assert(msg:find("state." .. name .. ": ", 1, true), "state." .. name .. " key " .. i .. ": " .. msg)
            assert(msg:find(case[2], 1, true), "state." .. name .. " key " .. i .. ": want " .. case[2] .. " in: " .. msg)
          end
        end
        local ok, msg = pcall(state.get, nil)
        assert(not ok and tostring(msg):find("got nil", 1, true), tostring(msg))
        check(state.keys(), {"keep"}, "keys after bad keys")
        print("bad keys ok")
        "#,
    );
    assert!(out.contains("bad keys ok"), "{out}");
    // Unprotected, the error is the cell's, at the caller's line.
    let o = failing_cell(&home, "default", "local x = 1\nstate.set(\"\", x)");
    assert!(stderr(&o).contains(":2: state.set: bad state key: keys must not be empty"), "{}", out_text(&o));
    let o = failing_cell(&home, "default", "state.get(42)");
    assert!(stderr(&o).contains(":1: state.get: keys must be strings, got integer"), "{}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "refused keys changed the file");
    // 4096 bytes is the limit, inclusive; a long key round-trips through a new kernel.
    cell(&home, "default", r#"state.set(string.rep("k", 4095) .. "z", "long")"#);
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.get(string.rep("k", 4095) .. "z"), "long", "4096-byte key")"#);
}

/// The state functions return exactly their documented values: `get`, `delete`, `keys` and `update`
/// one, `set` and `clear` none (like `table.insert`), so typing `state.set(k, v)` in the REPL or
/// `exec` shows nothing rather than "nil".
#[test]
fn state_functions_return_exactly_their_values() {
    let home = Home::new("state-arity");
    let out = ok(&home, &["exec", r#"state.set("a", 1)"#], "");
    assert_eq!(out, "", "state.set shows nothing in the session");
    let out = ok(&home, &["exec", "state.clear()"], "");
    assert_eq!(out, "", "state.clear shows nothing in the session");
    ok(&home, &["exec", r#"state.set("a", 1)"#], "");
    let out = ok(&home, &["exec", r#"print(state.get("a"))"#], "");
    assert_eq!(out, "1\n");
    cell(
        &home,
        "default",
        r##"
        check(select("#", state.set("b", 2)), 0, "values of state.set")
        check(select("#", state.get("a")), 1, "values of state.get")
        check(select("#", state.get("nope", 3)), 1, "values of state.get with default")
        check(select("#", state.keys()), 1, "values of state.keys")
        check(select("#", state.delete("b")), 1, "values of state.delete")
        check(select("#", state.update("a", function(v) return v + 1 end)), 1, "values of state.update")
        check(select("#", state.clear()), 0, "values of state.clear")
        "##,
    );
}
