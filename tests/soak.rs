//! Long tests, ignored by `cargo test`: `make soak` runs them
//! (`cargo test --test soak -- --ignored --nocapture`).
//!
//! - `hundred_thousand_executes_keep_the_kernel_rss_flat`: 100 000 execute requests in a row on one
//!   kernel, the kernel's VmRSS sampled every 10 000; prints the figures, asserts no growth.
//! - `fuzz_wire_decode_stable`: the wire decoder fuzzer for machines without a nightly toolchain
//!   (mutation-based, seeded PRNG, bounded by FUZZ_SECS, default 60); same property as the
//!   cargo-fuzz target `fuzz/fuzz_targets/wire_decode.rs`. `make fuzz` runs it when cargo fuzz cannot.

mod common;

#[path = "../fuzz/wire_check.rs"]
mod wire_check;

use common::*;
use llmspell::client::{Client, ExecOptions, StdinMode};
use llmspell::wire::{self, Message, Signer};
use serde_json::json;
use std::time::{Duration, Instant};

fn vm_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the kernel is running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
#[ignore = "soak: make soak"]
fn hundred_thousand_executes_keep_the_kernel_rss_flat() {
    const TOTAL: usize = 100_000;
    const EVERY: usize = 10_000;
    let home = Home::new("soak");
    let out = home.cmd(&["kernel", "start", "--daemon", "--id", "soak"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = home.kernel_pid("soak").unwrap();
    let mut c = Client::connect_file(&home.kernels_dir().join("soak.json"), Duration::from_secs(10)).unwrap();
    // A cell that does a little of everything a cell does: globals, a table, a string, output and
    // a value to show. Not stored in history (history grows by design; measured separately below).
    let opts = ExecOptions { silent: false, store_history: false, stdin: StdinMode::None };
    let mut samples: Vec<(usize, u64)> = vec![(0, vm_rss_kb(pid))];
    let t = Instant::now();
    let mut printed = 0usize;
    for i in 1..=TOTAL {
        let code = format!(
            "n = (n or 0) + 1 local t = {{}} for j = 1, 20 do t[j] = j * {i} end \
             s = string.rep('v', 100) .. {i} print('line ' .. n) return #t + n"
        );
        let reply = c
            .execute(&code, &opts, None, &mut |_| printed += 1, &mut |_, _| {
                llmspell::client::LineAnswer::Interrupt
            })
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.status(), "ok", "request {i}: {}", reply.content);
        if i % EVERY == 0 {
            samples.push((i, vm_rss_kb(pid)));
            println!(
                "after {i:>6} requests: kernel VmRSS {:>7} kB  ({:.0} req/s)",
                samples.last().unwrap().1,
                i as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    assert_eq!(printed, 2 * TOTAL, "every print and every value reached the client");
    // The first 10 000 warm caches and allocator arenas: compare the rest against that sample.
    let first = samples[1].1;
    let last = samples.last().unwrap().1;
    let max = samples[1..].iter().map(|s| s.1).max().unwrap();
    println!(
        "VmRSS kB: start {} | at 10k {first} | at 100k {last} | max after 10k {max} | growth 10k->100k {} kB",
        samples[0].1,
        last as i64 - first as i64
    );
    assert!(last <= first + 10 * 1024, "the kernel's RSS grew from {first} kB to {last} kB: {samples:?}");

    // History: cells stored in history are kept for history_request, so RSS grows with them. Report
    // the cost per stored cell (not asserted: it is the documented behaviour).
    let opts = ExecOptions { store_history: true, ..opts };
    let before = vm_rss_kb(pid);
    for i in 0..EVERY {
        c.execute(&format!("h = {i}"), &opts, None, &mut |_| {}, &mut |_, _| {
            llmspell::client::LineAnswer::Interrupt
        })
        .unwrap();
    }
    let after = vm_rss_kb(pid);
    println!(
        "{EVERY} cells stored in history: VmRSS {before} -> {after} kB ({:.0} bytes per cell)",
        (after as f64 - before as f64) * 1024.0 / EVERY as f64
    );
}

// ------------------------------------------------------------------------------------------------
// The stable-toolchain wire fuzzer
// ------------------------------------------------------------------------------------------------

/// Valid messages (as fuzzer inputs: mode byte + frames joined by SEP) to mutate from.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let contents = [
        json!({"code": "print(1)", "silent": false, "user_expressions": {"a": "1"}}),
        json!({"code": "é = 1\n", "cursor_pos": 3}),
        json!({"value": "line"}),
        json!({}),
        json!({"n": 1.5e300, "neg": -0.0, "big": 18446744073709551615u64, "arr": [null, true, [], {}]}),
    ];
    for (i, content) in contents.iter().enumerate() {
        for (mode, key) in [(0u8, ""), (1, wire_check::KEY), (2, wire_check::KEY)] {
            let mut header = wire::header("execute_request", "fuzz-session");
            header["msg_id"] = json!(format!("seed-{i}"));
            let msg = Message {
                identities: if i % 2 == 0 { vec![b"client-id".to_vec()] } else { Vec::new() },
                header,
                parent_header: if i % 3 == 0 { json!({}) } else { json!({"msg_id": "p", "msg_type": "x"}) },
                metadata: json!({"llmspell": {"stdin": "raw"}}),
                content: content.clone(),
                buffers: if i == 3 { vec![b"buf".to_vec(), Vec::new()] } else { Vec::new() },
                raw_header: Vec::new(),
            };
            let frames = wire::encode(&msg, &Signer::new(key));
            let mut input = vec![mode];
            input.extend(wire_check::join_frames(&frames));
            out.push(input);
        }
    }
    out
}

const INTERESTING: &[&[u8]] = &[
    b"<IDS|MSG>",
    b"{}",
    b"[]",
    b"null",
    b"\"",
    b"{\"msg_id\":\"a\",\"msg_type\":\"b\"}",
    b"\xff\xfe",
    b"\xc3",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"00",
    b"zz",
    wire_check::SEP,
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                d.insert(i, rng.next() as u8);
            }
            3 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                d.drain(a..b);
            }
            4 => {
                let i = rng.below(len + 1);
                let tok = INTERESTING[rng.below(INTERESTING.len())];
                d.splice(i..i, tok.iter().copied());
            }
            5 if len > 1 => {
                // Truncate.
                d.truncate(rng.below(len));
            }
            6 => {
                // Splice with another corpus entry.
                let other = &corpus[rng.below(corpus.len())];
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                d.truncate(a);
                d.extend_from_slice(&other[b..]);
            }
            7 if len > 0 => {
                // Duplicate a chunk (repeated frames, nested JSON).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = d[a..b].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            _ => {
                if !d.is_empty() {
                    d[0] = rng.next() as u8; // the mode byte
                }
            }
        }
    }
    d.truncate(64 << 10);
    d
}

#[test]
#[ignore = "fuzz: make fuzz (when cargo fuzz with a nightly toolchain is not available)"]
fn fuzz_wire_decode_stable() {
    let secs: u64 = std::env::var("FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("fuzzing llmspell::wire::decode for {secs} s, FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let mut corpus = seeds();
    for s in &corpus {
        wire_check::check(s);
    }
    // Keep inputs that decode (they reach deeper code) as further parents, up to a bound.
    let decodes = |d: &[u8]| -> bool {
        let Some((&mode, rest)) = d.split_first() else { return false };
        let signer = Signer::new(if mode % 3 == 0 { "" } else { wire_check::KEY });
        wire::decode(wire_check::split_frames(rest), &signer).is_ok()
    };
    std::panic::set_hook(Box::new(|_| {})); // report crashes ourselves, once
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    let mut accepted = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let parent = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, parent, &corpus);
            let result = std::panic::catch_unwind(|| wire_check::check(&input));
            runs += 1;
            if let Err(e) = result {
                let _ = std::panic::take_hook();
                let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
                let path = dir.join(format!("wire-crash-{seed}-{runs}.bin"));
                std::fs::write(&path, &input).unwrap();
                let why =
                    e.downcast_ref::<String>().cloned().or(e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!(
                    "wire_check::check panicked after {runs} runs ({why:?}); input saved to {} \
                     (add it to wire_fuzz_regressions in tests/hostile/bad_input.rs)",
                    path.display()
                );
            }
            if decodes(&input) {
                accepted += 1;
                if corpus.len() < 5000 {
                    corpus.push(input);
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    println!("{runs} inputs, {accepted} decoded as messages, corpus {} entries: no panic", corpus.len());
}
