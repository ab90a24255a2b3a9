//! Iopub under pressure: a subscriber that never reads, a slow reader of a long flood.

use super::*;

/// An iopub subscriber on its own context, welcomed (so it misses nothing sent after this returns).
fn subscriber(ctx: &zmq::Context, info: &Value, rcvhwm: i32) -> zmq::Socket {
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(rcvhwm).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&format!("tcp://127.0.0.1:{}", info["iopub_port"])).unwrap();
    assert!(sub.poll(zmq::POLLIN, 30_000).unwrap() > 0, "no iopub_welcome");
    let welcome = wire::decode(sub.recv_multipart(0).unwrap(), &Signer::new(info["key"].as_str().unwrap()));
    assert_eq!(welcome.unwrap().msg_type(), "iopub_welcome");
    sub
}

/// Reads iopub stream output until `want` (stdout, stderr) bytes have arrived, reading at most
/// `per_sec` messages a second (0: as fast as it can). Gives up only after 60 s without a message.
fn read_streams(sub: &zmq::Socket, info: &Value, want: (usize, usize), per_sec: u64) -> (usize, usize) {
    let signer = Signer::new(info["key"].as_str().unwrap());
    let (mut out, mut err, mut read) = (0, 0, 0u64);
    let started = Instant::now();
    let mut last_read = Instant::now();
    while (out, err) != want && last_read.elapsed() < Duration::from_secs(60) {
        // Paced: message n no earlier than n / per_sec seconds after the start.
        if let Some(micros) = (read * 1_000_000).checked_div(per_sec) {
            let due = started + Duration::from_micros(micros);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        let m = wire::decode(sub.recv_multipart(0).unwrap(), &signer).unwrap();
        read += 1;
        if m.msg_type() == "stream" {
            let n = m.content["text"].as_str().unwrap_or("").len();
            if m.content["name"] == "stdout" {
                out += n;
            } else {
                err += n;
            }
        }
        last_read = Instant::now();
    }
    (out, err)
}

#[test]
fn a_subscriber_that_never_reads_is_set_aside_once_and_four_readers_get_everything() {
    let _alone = floods_one_at_a_time();
    // A client that subscribes to iopub and then reads nothing (a KernelManager's client that only
    // uses shell, a suspended `jupyter console`, or anyone who can reach the port: subscribing needs
    // no key) fills its queue. Sends wait for it once, for IOPUB_STALL_MS; then it is set aside.
    let k = Kernel::start("stall", &[]);
    let info = k.info();
    let ctx = zmq::Context::new();
    let stalled = ctx.socket(zmq::SUB).unwrap();
    stalled.set_rcvhwm(1).unwrap();
    stalled.set_rcvbuf(4096).unwrap();
    stalled.set_linger(0).unwrap();
    stalled.set_subscribe(b"").unwrap();
    stalled.connect(&format!("tcp://127.0.0.1:{}", info["iopub_port"])).unwrap();
    assert!(stalled.poll(zmq::POLLIN, 30_000).unwrap() > 0, "no iopub_welcome for the stalled subscriber");
    let _welcome = stalled.recv_multipart(0).unwrap(); // and never another read

    // 10 000 lines, stdout and stderr alternating so none are coalesced: 20 000 messages.
    const LINES: usize = 10_000;
    let flood = format!("for i = 1, {LINES} do io.write('o') io.stderr:write('e') end");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let info = info.clone();
            // A small queue: their progress shows often, however little CPU they get (see the
            // slow-reader test below).
            let sub = subscriber(&zmq::Context::new(), &info, 100);
            std::thread::spawn(move || read_streams(&sub, &info, (LINES * 2, LINES * 2), 0))
        })
        .collect();
    let mut c = k.client();
    let t = Instant::now();
    let first = run_cell(&mut c, &flood);
    let with_stall = t.elapsed();
    assert_eq!(first.status(), "ok", "{:?}", first.reply);
    let t = Instant::now();
    let second = run_cell(&mut c, &flood);
    let set_aside = t.elapsed();
    println!("{LINES}-line flood beside a subscriber that never reads: {with_stall:?}; once it is set aside: {set_aside:?}");
    for (n, cell) in [first, second].iter().enumerate() {
        assert_eq!(
            (cell.out.len(), cell.err.len()),
            (LINES, LINES),
            "flood {n}: the running client lost output"
        );
    }
    for (n, r) in readers.into_iter().enumerate() {
        let got = r.join().unwrap();
        assert_eq!(got, (LINES * 2, LINES * 2), "reader {n} lost output");
    }
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert!(
        iopub["waited"].as_u64() > Some(0),
        "the flood never filled the stalled queue: the test needs more output"
    );
    // Set aside at least once (it could be again: while the kernel's TCP buffer for it still takes
    // a batch, libzmq lets the pipe fill once more), and nobody who reads lost anything.
    assert!(iopub["set_aside"].as_u64() >= Some(1), "never set aside: {iopub}");
    assert_eq!(iopub["dropped"], 0, "{iopub}");
    assert!(k.log().contains("set aside"), "{}", k.log());
    // Control still answers, and quick cells are complete.
    for i in 0..20 {
        let cell = run_cell(&mut c, &format!("print({i}) io.stderr:write('e{i}')"));
        assert_eq!(
            (cell.out.as_str(), cell.err.as_str()),
            (format!("{i}\n").as_str(), format!("e{i}").as_str())
        );
    }
    k.assert_alive();
}

#[test]
fn a_reader_that_keeps_reading_at_1000_messages_a_second_gets_every_line_of_a_100_000_line_flood() {
    let _alone = floods_one_at_a_time();
    let k = Kernel::start("slowreader", &[]);
    let info = k.info();
    // 100 000 lines in 10 000 stdout messages of 10 lines, each followed by a stderr message (which
    // ends the coalescing): 20 000 messages, 20 s for a reader of 1 000 messages a second.
    const LINES: usize = 100_000;
    let flood = format!(
        "for i = 1, {} do io.write(('0123456789abcdef\\n'):rep(10)) io.stderr:write('.') end",
        LINES / 10
    );
    let want = (LINES * 17, LINES / 10);
    let slow = {
        let info = info.clone();
        // libzmq reports a reader's progress to the kernel each time it has read half its queue
        // (RCVHWM): with pyzmq's default of 1 000 that is every 0.5 s at 1 000 messages/s, but on a
        // machine loaded enough to slow this thread below 500 messages/s, over a second. A queue of
        // 100 keeps the test about reading, not about this thread's share of the CPU.
        let sub = subscriber(&zmq::Context::new(), &info, 100);
        std::thread::spawn(move || read_streams(&sub, &info, want, 1000))
    };
    let mut c = k.client();
    let t = Instant::now();
    let cell = run_cell(&mut c, &flood);
    println!("{LINES}-line flood with a reader of 1 000 messages/s: {:?}", t.elapsed());
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    assert_eq!((cell.out.len(), cell.err.len()), want, "the running client lost output");
    assert_eq!(slow.join().unwrap(), want, "the slow reader lost output");
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert!(
        iopub["waited"].as_u64() > Some(0),
        "the flood never waited for the slow reader: the test needs more output"
    );
    assert_eq!((iopub["set_aside"].as_u64(), iopub["dropped"].as_u64()), (Some(0), Some(0)), "{iopub}");
    k.assert_alive();
}
