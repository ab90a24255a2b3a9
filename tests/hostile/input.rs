//! A client that disconnects, or never answers, while the kernel waits for its input.

use super::*;

/// A raw client sends `code` with allow_stdin, optionally waits for the kernel's input_request, then
/// vanishes (its context is destroyed with linger 0). Returns whether the input_request came.
fn vanish(k: &Kernel, code: &str, wait_for_input_request: bool) -> bool {
    let raw = Raw::new(&k.info(), "vanisher");
    let (frames, id) =
        raw.request("execute_request", json!({"code": code, "allow_stdin": true, "stop_on_error": false}));
    raw.send(Chan::Shell, frames);
    let mut asked = false;
    if wait_for_input_request {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !asked && Instant::now() < deadline {
            if raw.stdin.poll(zmq::POLLIN, 100).unwrap() > 0 {
                asked = raw
                    .drain(Chan::Stdin)
                    .iter()
                    .any(|m| m.msg_type() == "input_request" && m.parent_msg_id() == id);
            }
        }
    } else {
        std::thread::sleep(Duration::from_millis(100)); // the request is on its way
    }
    drop(raw);
    asked
}

#[test]
fn a_client_that_vanishes_while_its_cell_waits_for_input_does_not_block_the_kernel() {
    // A long --input-timeout: being served well before it proves the kernel noticed the client going.
    // (The bounds below are a quarter of it: generous on a loaded machine, far below the timeout.)
    let k = Kernel::start("vanish", &["--input-timeout", "240"]);
    let mut next = k.client();
    run_cell(&mut next, "victim_data = 'precious'");

    // 1. The input_request was delivered, then the client vanished.
    assert!(vanish(&k, "waiting = io.read() return waiting", true), "no input_request arrived");
    let t = Instant::now();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited = t.elapsed();
    println!("gone after its input_request: next client served after {waited:?} (--input-timeout 240)");
    assert!(waited < Duration::from_secs(60), "{waited:?}");

    // 2. The same, and the next client also interrupts: served at once.
    assert!(vanish(&k, "waiting = io.read() return waiting", true));
    let t = Instant::now();
    next.interrupt();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited_interrupted = t.elapsed();
    println!("gone after its input_request, then an interrupt: served after {waited_interrupted:?}");
    assert!(waited_interrupted < Duration::from_secs(60), "{waited_interrupted:?}");

    // 3. The client vanished before the kernel asked (its cell was busy for 1 s first).
    vanish(
        &k,
        "local t = os.clock() while os.clock() - t < 1 do end waiting = io.read() return waiting",
        false,
    );
    let t = Instant::now();
    assert_eq!(value_of(&mut next, "victim_data"), "\"precious\"");
    let waited_early = t.elapsed();
    println!(
        "gone before its input_request: next client served after {waited_early:?} (the cell ran 1 s first)"
    );
    assert!(waited_early < Duration::from_secs(60), "{waited_early:?}");
    assert_eq!(value_of(&mut next, "waiting"), "nil");
    let log = k.log();
    println!(
        "log lines about it: {:?}",
        log.lines()
            .filter(|l| l.contains("stdin:"))
            .map(|l| l.split("] ").nth(1).unwrap_or(l))
            .collect::<Vec<_>>()
    );
    k.assert_alive();
}

#[test]
fn a_client_that_never_answers_input_is_cut_off_by_the_input_timeout() {
    let k = Kernel::start("silent", &["--input-timeout", "2"]);
    let raw = k.raw(); // stays connected, never answers
    let (frames, id) = raw.request(
        "execute_request",
        json!({"code": "return io.read()", "allow_stdin": true, "stop_on_error": false}),
    );
    let t = Instant::now();
    raw.send(Chan::Shell, frames);
    let mut seen = Vec::new();
    let reply =
        raw.wait_reply(Chan::Shell, &id, Duration::from_secs(90), &mut seen).expect("an execute_reply");
    let took = t.elapsed();
    println!(
        "silent client: reply after {took:?}: {} {:?}",
        reply.content["status"], reply.content["evalue"]
    );
    // Not before the timeout; the upper bound only catches a kernel that ignores it.
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(60), "{took:?}");
    let evalue = reply.content["evalue"].as_str().unwrap_or("");
    assert!(evalue.contains("no input arrived within 2 s"), "{}", reply.content);
    let mut next = k.client();
    assert_eq!(value_of(&mut next, "1 + 1"), "2");
}
