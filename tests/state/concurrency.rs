//! Concurrency between kernels (and the CLI): no lost update, no lost key.

use super::*;

// ------------------------------------------------------------------------------------------------
// Concurrency between kernels (and the CLI)
// ------------------------------------------------------------------------------------------------

/// Waits (inside Lua, at most 60 s) until `n` scripts have reached this point, so the loops that
/// follow overlap.
fn barrier(n: usize) -> String {
    format!(
        r#"
        state.update("ready", function(v) return (v or 0) + 1 end)
        local t0 = os.time()
        while state.get("ready") < {n} do
          assert(os.time() - t0 < 60, "the other kernels never started")
        end
        "#
    )
}

#[test]
fn two_kernels_updating_one_counter_reach_the_exact_total() {
    let home = Home::new("state-counter");
    let code = format!(
        r#"{}
        local got = {{}}
        for i = 1, 1000 do
          got[#got + 1] = (state.update("n", function(v) return (v or 0) + 1 end))
        end
        print(table.concat(got, " "))
        "#,
        barrier(2)
    );
    let outs = script_in_kernels_a_and_b(&home, "count", &code, false);
    let mut all = Vec::new();
    for o in &outs {
        assert!(o.status.success(), "{}", out_text(o));
        let seen: Vec<u64> = stdout(o).split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(seen.len(), 1000, "{}", out_text(o));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "each kernel sees the counter grow");
        all.extend(seen);
    }
    all.sort();
    assert_eq!(all, (1..=2000).collect::<Vec<u64>>(), "every increment saw a distinct value");
    assert_eq!(cli_get(&home, "n"), json!(2000));
    cell(&home, "a", r#"check(state.get("n"), 2000, "n in kernel a")"#);
    let (a, b) = (home.kernel_pid("a").unwrap(), home.kernel_pid("b").unwrap());
    assert_ne!(a, b, "two kernel processes");
    assert!(process_alive(a) && process_alive(b));
}

#[test]
fn two_kernels_setting_different_keys_lose_none() {
    let home = Home::new("state-merge");
    // Sets stay pending until the next update (every third step) or the end (the last two sets):
    // many interleaved commits, through both update and the end-of-script flush.
    let code = format!(
        r#"{}
        local id = arg[1]
        for i = 1, 300 do
          state.set(id .. ".s" .. i, i)
          if i % 3 == 1 then state.update(id .. ".u" .. i, function(v) assert(v == nil); return {{i = i}} end) end
        end
        "#,
        barrier(2)
    );
    let outs = script_in_kernels_a_and_b(&home, "keys", &code, true);
    for o in &outs {
        assert!(o.status.success(), "{}", out_text(o));
    }
    let file = state_file(&home);
    for id in ["a", "b"] {
        for i in 1..=300 {
            assert_eq!(file.get(&format!("{id}.s{i}")), Some(&json!(i)), "{id}.s{i} lost");
            if i % 3 == 1 {
                assert_eq!(file.get(&format!("{id}.u{i}")), Some(&json!({"i": i})), "{id}.u{i} lost");
            }
        }
    }
    assert_eq!(file.len(), 2 * 400 + 1, "exactly the keys written (plus `ready`)");
}

#[test]
fn kernels_and_cli_writing_concurrently_lose_no_key() {
    let home = Home::new("state-merge-cli");
    ok(&home, &["--kernel", "a", "exec", "return 1"], "");
    ok(&home, &["--kernel", "b", "exec", "return 1"], "");
    const N: usize = 40;
    std::thread::scope(|s| {
        for id in ["a", "b"] {
            let home = &home;
            s.spawn(move || {
                for i in 1..=N {
                    ok(home, &["--kernel", id, "exec", &format!(r#"state.set("{id}.{i}", {i})"#)], "");
                }
            });
        }
        let home = &home;
        s.spawn(move || {
            for i in 1..=N {
                ok(home, &["state", "set", &format!("cli.{i}"), &i.to_string()], "");
            }
        });
    });
    for prefix in ["a.", "b.", "cli."] {
        let keys = cli_list(&home, Some(prefix));
        assert_eq!(keys.len(), N, "keys {prefix}*: {keys:?}");
    }
    let file = state_file(&home);
    assert_eq!(file.len(), 3 * N);
    for (k, v) in &file {
        let i: i64 = k.rsplit('.').next().unwrap().parse().unwrap();
        assert_eq!(v, &json!(i), "{k}");
    }
}
