//! Hostile and broken input on the wire: malformed, replayed, unknown and oversized messages,
//! garbage on the heartbeat and iopub ports, and the wire fuzzer's regressions.

use super::*;

/// What a malformed message should be logged as, by its kind.
const LOG_NO_DELIMITER: &str = "dropped a message: no <IDS|MSG> delimiter";
const LOG_FRAMES: &str = "frames after the delimiter, need at least 5";
const LOG_SIGNATURE: &str = "dropped a message: bad or missing HMAC signature";
const LOG_JSON: &str = "is not a JSON object";
const LOG_FIELD: &str = "dropped a message: header lacks a string";
const LOG_TOO_BIG: &str = "dropped a message of more than 1048576 bytes";

/// Well-signed requests whose JSON has the wrong type in every field a kernel reads. The kernel must
/// answer each `*_request` with its reply (and keep serving); other types it ignores.
fn odd_but_signed(raw: &Raw, chan: Chan) -> Vec<(Vec<Vec<u8>>, String, String)> {
    let mut specs: Vec<(Value, Value, Value, Value)> = Vec::new();
    let mut add = |msg_type: &str, metadata: Value, content: Value| {
        specs.push((raw.header(msg_type), json!({}), metadata, content));
    };
    match chan {
        Chan::Shell => {
            for content in [
                json!({"code": 5}),
                json!({"code": null}),
                json!({"code": []}),
                json!({"code": {"a": 1}}),
                json!({"code": "1", "silent": "yes", "store_history": 3, "allow_stdin": "x", "stop_on_error": "x"}),
                json!({"code": "1", "user_expressions": []}),
                json!({"code": "1", "user_expressions": {"a": 5, "b": null, "c": "1 +", "d": "os.exit(1)", "e": "error({})"}}),
                json!({"code": "1", "user_expressions": "x"}),
                json!({"code": "error('planned')", "stop_on_error": "no"}),
                json!({}),
            ] {
                add("execute_request", json!({}), content);
            }
            for metadata in [
                json!({"llmspell": 5}),
                json!({"llmspell": {"stdin": 7, "run": 5}}),
                json!({"llmspell": {"run": {"name": 5, "args": 5}}}),
                json!({"llmspell": {"run": {"name": [], "args": [1, {}, null, "ok"]}}}),
                json!({"llmspell": {"run": "x"}}),
            ] {
                add("execute_request", metadata, json!({"code": "return 1"}));
            }
            for content in [
                json!({"code": 5, "cursor_pos": "x"}),
                json!({"code": "string.", "cursor_pos": -1}),
                json!({"code": "string.", "cursor_pos": 1e300}),
                json!({"code": "string.", "cursor_pos": 18446744073709551615u64}),
                // (inspect_request with "é = stri" at 1 kills the Lua thread: see
                // inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive)
                json!({"code": "é = stri", "cursor_pos": 3}),
                json!({"code": "ééé", "cursor_pos": 2}),
                json!({"code": [], "cursor_pos": []}),
                json!({}),
            ] {
                add("complete_request", json!({}), content.clone());
                if content["code"].as_str().is_some_and(|c| !c.is_ascii()) {
                    continue; // inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive
                }
                let mut c = content;
                c["detail_level"] = json!("x");
                add("inspect_request", json!({}), c);
            }
            for content in [json!({"code": 5}), json!({"code": "if x then"}), json!({})] {
                add("is_complete_request", json!({}), content);
            }
            for content in [
                json!({"hist_access_type": 5}),
                json!({"hist_access_type": "range", "start": "x", "stop": -5, "output": "x", "raw": []}),
                json!({"hist_access_type": "range", "start": 18446744073709551615u64, "stop": 0}),
                json!({"hist_access_type": "tail", "n": "x"}),
                json!({"hist_access_type": "tail", "n": 1e20}),
                json!({"hist_access_type": "tail", "n": 18446744073709551615u64}),
                json!({"hist_access_type": "search", "pattern": 5, "unique": "x", "n": -1}),
                json!({"hist_access_type": "search", "pattern": "*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?b"}),
                json!({"hist_access_type": []}),
            ] {
                add("history_request", json!({}), content);
            }
            add("comm_info_request", json!({}), json!({"target_name": 5}));
            add("comm_open", json!({}), json!({"comm_id": [], "target_name": 5, "data": 5}));
            add("comm_msg", json!({}), json!({"comm_id": {}, "data": "x"}));
            add("comm_close", json!({}), json!({"comm_id": 5}));
            add("kernel_info_request", json!({"x": [1, 2]}), json!({"unexpected": true}));
            add("interrupt_request", json!({}), json!({}));
        }
        Chan::Control => {
            add("kernel_info_request", json!({}), json!({"x": 1}));
            add("interrupt_request", json!({}), json!({"restart": "x"}));
            add("debug_request", json!({}), json!({"command": 5}));
        }
        Chan::Stdin => {
            add("input_reply", json!({}), json!({"value": 5}));
            add("input_reply", json!({}), json!({}));
            add("execute_request", json!({}), json!({"code": "x = 1"}));
        }
    }
    // Wrong types in the header's other fields, and in the parent header.
    let odd_headers = [
        json!({"session": 5, "username": [], "date": {}, "version": 5}),
        json!({"session": null, "date": "not a date", "version": "99.0"}),
    ];
    let base_type = match chan {
        Chan::Shell | Chan::Control => "kernel_info_request",
        Chan::Stdin => "input_reply",
    };
    for odd in odd_headers {
        let mut h = raw.header(base_type);
        for (k, v) in odd.as_object().unwrap() {
            h[k] = v.clone();
        }
        specs.push((h, json!({"msg_id": 5, "msg_type": [], "header": "x"}), json!({}), json!({})));
    }
    specs
        .into_iter()
        .map(|(h, p, m, c)| {
            let id = h["msg_id"].as_str().unwrap().to_string();
            let t = h["msg_type"].as_str().unwrap().to_string();
            (raw.signed_json(&h, &p, &m, &c), id, t)
        })
        .collect()
}

/// One malformed message of kind `kind` for `chan`, and the log text it must produce.
fn malformed(raw: &Raw, rng: &mut Rng, kind: usize) -> (Vec<Vec<u8>>, &'static str) {
    let (good, _) = raw.request("kernel_info_request", json!({}));
    match kind {
        // No delimiter at all: random frames (never exactly "<IDS|MSG>"), or a near miss.
        0 => {
            let n = 1 + rng.below(8);
            let mut frames: Vec<Vec<u8>> = (0..n).map(|_| rng.some(64)).collect();
            if rng.below(3) == 0 {
                frames[0] = b"<IDS|MSG".to_vec();
            }
            if rng.below(3) == 0 {
                frames = good[1..].to_vec(); // a valid message with the delimiter left out
            }
            (frames, LOG_NO_DELIMITER)
        }
        // Too few frames after the delimiter.
        1 => {
            let keep = 1 + rng.below(5); // the delimiter and 0..=4 of the 5 frames
            (good[..keep].to_vec(), LOG_FRAMES)
        }
        // Bad or missing signatures.
        2 => {
            let mut f = good.clone();
            let sig = f[1].clone();
            f[1] = match rng.below(7) {
                0 => Vec::new(),
                1 => rng.bytes(64),
                2 => b"zz".repeat(32),
                3 => sig[..sig.len() - 1].to_vec(),
                4 => [&sig[..], b"00"].concat(),
                5 => wire::random_hex(32).into_bytes(),
                _ => {
                    // The right signature for a different content.
                    f[5] = br#"{"code":"os.exit()"}"#.to_vec();
                    sig
                }
            };
            (f, LOG_SIGNATURE)
        }
        // Truncated or non-UTF-8 JSON, and JSON that is not an object, correctly signed.
        3 => {
            let h = serde_json::to_vec(&raw.header("execute_request")).unwrap();
            let parts: [Vec<u8>; 4] = [h, b"{}".to_vec(), b"{}".to_vec(), br#"{"code":"1"}"#.to_vec()];
            let which = rng.below(4);
            let mut parts = parts;
            parts[which] = match rng.below(6) {
                0 => {
                    let p = &parts[which];
                    p[..rng.below(p.len())].to_vec()
                }
                1 => b"\xff\xfe\xfd{}".to_vec(),
                2 => b"{\"msg_id\": \"\xc3\x28\"}".to_vec(),
                3 => b"[1, 2, 3]".to_vec(),
                4 => b"5".to_vec(),
                _ => b"null".to_vec(),
            };
            (raw.signed_parts(&parts[0], &parts[1], &parts[2], &parts[3]), LOG_JSON)
        }
        // A header without string msg_id / msg_type, correctly signed.
        _ => {
            let mut h = raw.header("execute_request");
            let bad = [json!([]), json!(5), json!(null), json!({}), json!(true)];
            match rng.below(3) {
                0 => h["msg_type"] = rng.pick(&bad).clone(),
                1 => h["msg_id"] = rng.pick(&bad).clone(),
                _ => {
                    h.as_object_mut().unwrap().remove(if rng.below(2) == 0 { "msg_id" } else { "msg_type" });
                }
            }
            (raw.signed_json(&h, &json!({}), &json!({}), &json!({"code": "1"})), LOG_FIELD)
        }
    }
}

/// What the malformed-message flood sent and got back.
#[derive(Default)]
struct Flood {
    /// Malformed messages sent, by channel and the log line that must name their drop.
    sent_malformed: HashMap<(Chan, &'static str), usize>,
    /// Well-signed requests that must get exactly one reply: msg_id -> (channel, reply type).
    expected_replies: HashMap<String, (Chan, String)>,
    odd_sent: usize,
    received: Vec<(Chan, Message)>,
}

impl Flood {
    /// The well-signed requests with wrong types, unknown types, and oversized messages (a frame
    /// bigger than --max-message-mb 1, or many small frames adding up to more).
    fn send_odd_and_oversized(&mut self, raw: &Raw, chan: Chan, round: usize) {
        for (frames, id, t) in odd_but_signed(raw, chan) {
            raw.send(chan, frames);
            self.odd_sent += 1;
            let replies = t.ends_with("_request") && chan != Chan::Stdin;
            if replies {
                self.expected_replies.insert(id, (chan, reply_type(&t)));
            }
        }
        for t in ["foo_request", "foo", "", "_request", "execute_reply", "status", "ñ_request"] {
            let (frames, id) = raw.request(t, json!({}));
            raw.send(chan, frames);
            self.odd_sent += 1;
            if t.ends_with("_request") && chan != Chan::Stdin {
                self.expected_replies.insert(id, (chan, reply_type(t)));
            }
        }
        let (mut frames, _) = raw.request("execute_request", json!({"code": "huge = true"}));
        if round.is_multiple_of(20) {
            frames.push(vec![b'x'; 2 << 20]);
        } else {
            frames.extend((0..3000).map(|_| vec![b'y'; 400]));
        }
        assert!(frames_len(&frames) > 1 << 20);
        raw.send(chan, frames);
        *self.sent_malformed.entry((chan, LOG_TOO_BIG)).or_default() += 1;
    }

    /// Sentinels: once their replies are back, everything sent before them on that channel was read.
    fn wait_for_sentinels(&mut self, k: &Kernel, raw: &Raw, chans: &[Chan]) {
        for chan in [Chan::Shell, Chan::Control] {
            let (frames, id) = raw.request("kernel_info_request", json!({}));
            raw.send(chan, frames);
            let mut seen = Vec::new();
            let reply = raw.wait_reply(chan, &id, Duration::from_secs(60), &mut seen);
            self.received.extend(seen.into_iter().map(|m| (chan, m)));
            assert!(
                reply.is_some(),
                "no reply on {} after the flood; log tail:\n{}",
                chan.name(),
                tail(&k.log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        for &chan in chans {
            self.received.extend(raw.drain(chan).into_iter().map(|m| (chan, m)));
        }
    }

    /// Every well-signed request got exactly one reply, of the right type, on its own channel; the
    /// unknown ones an error reply. Returns the requests that did not.
    fn requests_without_one_reply(&self) -> Vec<String> {
        let mut replies_by_parent: HashMap<String, Vec<(Chan, String, Value)>> = HashMap::new();
        for (chan, m) in &self.received {
            replies_by_parent.entry(m.parent_msg_id().to_string()).or_default().push((
                *chan,
                m.msg_type().to_string(),
                m.content.clone(),
            ));
        }
        let mut missing = Vec::new();
        for (id, (chan, rtype)) in &self.expected_replies {
            match replies_by_parent.get(id).map(|v| v.as_slice()) {
                Some([(c, t, content)]) => {
                    assert_eq!((c, t.as_str()), (chan, rtype.as_str()), "reply to {id}");
                    if rtype == "foo_reply" || rtype == "ñ_reply" || rtype == "_reply" {
                        assert_eq!(content["status"], "error", "{rtype}: {content}");
                    }
                    // The debugger answers a DAP response: a bad request is one that did not succeed.
                    if rtype == "debug_reply" {
                        assert_eq!(content["success"], false, "{rtype}: {content}");
                    }
                }
                other => missing.push(format!("{id} ({rtype} on {}): {other:?}", chan.name())),
            }
        }
        missing
    }

    /// The log names every kind of drop, on every channel.
    fn assert_every_drop_logged(&self, log: &str) {
        let mut counts = Vec::new();
        for ((chan, label), n) in &self.sent_malformed {
            let needle = format!("{}: ", chan.name());
            let logged = log.lines().filter(|l| l.contains(&needle) && l.contains(label)).count();
            counts.push(format!("{:7} {label:?}: sent {n}, logged {logged}", chan.name()));
            assert!(logged >= *n, "{} {label:?}: sent {n}, logged {logged}", chan.name());
        }
        counts.sort();
        println!("{}", counts.join("\n"));
    }
}

#[test]
fn malformed_messages_on_every_channel_are_dropped_and_logged() {
    let k = Kernel::start("malformed", &["--max-message-mb", "1"]);
    let raw = k.raw();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let chans = [Chan::Shell, Chan::Control, Chan::Stdin];
    let mut flood = Flood::default();
    let rounds = 250;
    for round in 0..rounds {
        for &chan in &chans {
            for kind in 0..5 {
                let (frames, label) = malformed(&raw, &mut rng, kind);
                raw.send(chan, frames);
                *flood.sent_malformed.entry((chan, label)).or_default() += 1;
            }
            // Every tenth round: the well-signed odd requests and oversized messages.
            if round % 10 == 0 {
                flood.send_odd_and_oversized(&raw, chan, round);
            }
        }
        for &chan in &chans {
            flood.received.extend(raw.drain(chan).into_iter().map(|m| (chan, m)));
        }
    }
    flood.wait_for_sentinels(&k, &raw, &chans);

    let missing = flood.requests_without_one_reply();
    let total_malformed: usize = flood.sent_malformed.values().sum();
    println!(
        "sent {total_malformed} malformed messages and {} well-signed odd ones; {} replies expected, {} received",
        flood.odd_sent,
        flood.expected_replies.len(),
        flood.received.len()
    );
    assert!(
        missing.is_empty(),
        "{} requests got no single reply: {:#?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(total_malformed >= 3000, "{total_malformed}");

    // The kernel still serves a normal client correctly.
    k.assert_alive();
    let mut c = k.client();
    assert_eq!(value_of(&mut c, "1 + 1"), "2");
    assert_eq!(value_of(&mut c, "huge"), "nil", "an oversized message must not have run");

    let log = k.log();
    flood.assert_every_drop_logged(&log);
    assert!(log.contains("ignored a \"foo\" message"), "{}", tail(&log, 20));
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
}

#[test]
fn a_replayed_signed_message_is_dropped() {
    let k = Kernel::start("replay", &[]);
    let raw = k.raw();
    let (frames, id) = raw.request("execute_request", json!({"code": "x = (x or 0) + 1", "silent": false}));
    raw.send(Chan::Shell, frames.clone());
    let mut seen = Vec::new();
    let first = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(10), &mut seen).expect("a reply");
    assert_eq!(first.content["status"], "ok");
    raw.send(Chan::Shell, frames.clone()); // identical frames, identical signature
                                           // And the same on control: a replayed kernel_info_request gets no second reply.
    let (kframes, kid) = raw.request("kernel_info_request", json!({}));
    raw.send(Chan::Control, kframes.clone());
    raw.send(Chan::Control, kframes);
    let mut seen = Vec::new();
    assert!(raw.wait_reply(Chan::Control, &kid, Duration::from_secs(10), &mut seen).is_some());
    let mut c = k.client();
    let x = value_of(&mut c, "x"); // served after the replay, which was queued before it
    std::thread::sleep(Duration::from_millis(300));
    let control_replies = 1 + raw.drain(Chan::Control).iter().filter(|m| m.parent_msg_id() == kid).count();
    let shell_replies = raw.drain(Chan::Shell).iter().filter(|m| m.parent_msg_id() == id).count();
    println!("x = {x}; second shell replies: {shell_replies}; control replies: {control_replies}");
    assert_eq!(x, "1", "the replayed execute_request ran again");
    assert_eq!(shell_replies, 0);
    assert_eq!(control_replies, 1);
    let log = k.log();
    assert!(log.contains("shell: dropped a replayed message (execute_request)"), "{log}");
    assert!(log.contains("control: dropped a replayed message (kernel_info_request)"), "{log}");
}

#[test]
fn unknown_request_types_get_an_error_reply() {
    let k = Kernel::start("unknown", &[]);
    let raw = k.raw();
    for chan in [Chan::Shell, Chan::Control] {
        let (frames, id) = raw.request("foo_request", json!({"a": 1}));
        raw.send(chan, frames);
        let mut seen = Vec::new();
        let r = raw.wait_reply(chan, &id, Duration::from_secs(10), &mut seen).expect("a foo_reply");
        println!("{}: {} {}", chan.name(), r.msg_type(), r.content);
        assert_eq!(r.msg_type(), "foo_reply");
        assert_eq!(r.content["status"], "error");
        assert!(r.content["evalue"].as_str().unwrap().contains("foo_request"), "{}", r.content);
    }
    let mut c = k.client();
    let r = c.request("bar_request", json!({}), Duration::from_secs(10)).unwrap();
    assert_eq!(r["status"], "error");
    assert_eq!(value_of(&mut c, "'still' .. ' here'"), "\"still here\"");
}

#[test]
fn a_message_just_under_the_size_limit_is_served() {
    let k = Kernel::start("size", &["--max-message-mb", "1"]);
    let mut c = k.client();
    let code = format!("s = '{}' return #s", "z".repeat(900 * 1024));
    assert_eq!(value_of(&mut c, &code), (900 * 1024).to_string());
    let code = format!("s = '{}' return #s", "z".repeat(1100 * 1024));
    // Over the limit: dropped, so no reply ever comes. Send it raw and check the log.
    let raw = k.raw();
    let (frames, _) = raw.request("execute_request", json!({ "code": code }));
    raw.send(Chan::Shell, frames);
    assert!(wait_until(Duration::from_secs(5), || k.log().contains(LOG_TOO_BIG)), "{}", k.log());
    assert_eq!(value_of(&mut c, "#s"), (900 * 1024).to_string());
}

#[test]
fn garbage_on_heartbeat_iopub_and_raw_tcp_is_harmless() {
    let k = Kernel::start("garbage", &[]);
    let info = k.info();
    let ip = info["ip"].as_str().unwrap();
    let mut rng = Rng(0xdead_beef_0042);
    let ctx = zmq::Context::new();
    // A fresh REQ per try, so one lost echo cannot wedge the next. Echoes lost to the libzmq REP
    // quirk (see a_broken_peer_on_the_heartbeat_port_costs_no_echo) are counted, not failures; a
    // heartbeat that stays silent is.
    let lost = std::cell::Cell::new(0);
    let hb_answers = |phase: &str| {
        for _ in 0..3 {
            let s = ctx.socket(zmq::REQ).unwrap();
            s.set_linger(0).unwrap();
            s.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
            s.send(phase, 0).unwrap();
            if s.poll(zmq::POLLIN, 2000).unwrap() > 0 && s.recv_bytes(0).unwrap() == phase.as_bytes() {
                return;
            }
            lost.set(lost.get() + 1);
        }
        panic!("the heartbeat stopped answering after {phase}; log:\n{}", tail(&k.log(), 10));
    };
    // Heartbeat: garbage is echoed, as heartbeats are; a DEALER without the REQ envelope is ignored.
    let hb = ctx.socket(zmq::REQ).unwrap();
    hb.set_linger(0).unwrap();
    hb.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
    for i in 0..500 {
        let data = rng.some(4096);
        hb.send(&data, 0).unwrap();
        assert!(hb.poll(zmq::POLLIN, 5000).unwrap() > 0, "heartbeat {i} not echoed");
        assert_eq!(hb.recv_bytes(0).unwrap(), data);
    }
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.connect(&format!("tcp://{ip}:{}", info["hb_port"])).unwrap();
    for _ in 0..500 {
        let frames: Vec<Vec<u8>> = (0..1 + rng.below(4)).map(|_| rng.some(100)).collect();
        dealer.send_multipart(frames, 0).unwrap();
    }
    hb_answers("envelope-less DEALER messages");
    // iopub: an XSUB may send anything upstream: odd (un)subscriptions, empty and huge messages.
    let xsub = ctx.socket(zmq::XSUB).unwrap();
    xsub.set_linger(0).unwrap();
    xsub.connect(&format!("tcp://{ip}:{}", info["iopub_port"])).unwrap();
    for i in 0..2000 {
        let msg: Vec<u8> = match i % 6 {
            0 => Vec::new(),
            1 => vec![1],
            2 => [&[1u8][..], &rng.some(200)].concat(),
            3 => [&[0u8][..], &rng.some(200)].concat(),
            4 => [&[2u8][..], &rng.some(200)].concat(),
            _ => [&[1u8][..], &vec![b't'; 100_000][..]].concat(),
        };
        xsub.send(msg, 0).unwrap();
    }
    hb_answers("XSUB garbage on iopub");
    // Raw TCP: random bytes, and a ZMTP greeting followed by garbage, on every port.
    let mut raw_conns = 0;
    for port in ["shell_port", "control_port", "stdin_port", "iopub_port", "hb_port"] {
        for i in 0..20 {
            let addr = format!("{ip}:{}", info[port]);
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                raw_conns += 1;
                let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                let mut data = if i % 2 == 0 {
                    b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00NULL".to_vec()
                } else {
                    Vec::new()
                };
                data.extend(rng.some(20_000));
                let _ = s.write_all(&data);
                let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
                let _ = s.read(&mut [0u8; 64]);
            }
        }
        hb_answers(&format!("raw TCP garbage on {port}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    k.assert_alive();
    hb_answers("the end");
    let mut c = k.client(); // the handshake needs control and iopub to work
    assert_eq!(value_of(&mut c, "print('out') return 6 * 7"), "42");
    let cell = run_cell(&mut c, "print('visible')");
    assert_eq!(cell.out, "visible\n");
    println!(
        "1000 heartbeat garbage messages, 2000 XSUB messages, {raw_conns} raw TCP connections: kernel serves; \
         heartbeat echoes lost on the way: {}",
        lost.get()
    );
}

/// A ZMTP/1.0 peer (no 0xFF greeting) that sends an empty identity, a two-frame message with no REQ
/// envelope, then a frame header claiming 3.6e18 bytes, and hangs up. Found by the random TCP
/// garbage above (2250 bytes, minimised to these 148).
fn zmtp1_broken_peer() -> Vec<u8> {
    let mut d = vec![0x01, 0x00];
    d.extend([110, 0x01]);
    d.extend([b'a'; 109]);
    d.extend([24, 0x00]);
    d.extend([b'b'; 23]);
    d.push(0xff);
    d.extend(3_683_973_964_138_117_104u64.to_be_bytes());
    d.push(0);
    d
}

#[test]
fn a_broken_peer_on_the_heartbeat_port_costs_no_echo() {
    let k = Kernel::start("hbwedge", &[]);
    let info = k.info();
    let ctx = zmq::Context::new();
    let mut answered = Vec::new();
    {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{}", info["hb_port"])).unwrap();
        s.write_all(&zmtp1_broken_peer()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        let s = ctx.socket(zmq::REQ).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&format!("tcp://127.0.0.1:{}", info["hb_port"])).unwrap();
        s.send(format!("ping{i}").as_str(), 0).unwrap();
        answered.push(s.poll(zmq::POLLIN, 1000).unwrap() > 0);
    }
    println!("heartbeat pings answered after the broken peer: {answered:?}");
    assert_eq!(answered, [true, true, true]);
}

#[test]
fn inspect_with_a_multibyte_character_before_the_name_keeps_the_shell_alive() {
    let k = Kernel::start("inspect", &[]);
    let raw = k.raw();
    let (frames, id) =
        raw.request("inspect_request", json!({"code": "é = stri", "cursor_pos": 1, "detail_level": 0}));
    raw.send(Chan::Shell, frames);
    let mut seen = Vec::new();
    let reply = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(5), &mut seen);
    println!(
        "inspect_request {{code: \"é = stri\", cursor_pos: 1}}: reply {:?}",
        reply.as_ref().map(|m| &m.content)
    );
    let (frames, id) = raw.request("execute_request", json!({"code": "1 + 1"}));
    raw.send(Chan::Shell, frames);
    let after = raw.wait_reply(Chan::Shell, &id, Duration::from_secs(5), &mut seen);
    println!("execute_request after it: reply {:?}", after.as_ref().map(|m| &m.content));
    assert!(reply.is_some(), "no inspect_reply");
    assert!(after.is_some(), "the shell no longer answers");
}

#[test]
fn one_clients_failed_cell_does_not_abort_another_clients_queued_request() {
    let k = Kernel::start("abort", &[]);
    let raw = k.raw(); // a notebook-like client: stop_on_error true
    let (frames, _) = raw.request(
        "execute_request",
        json!({"code": "local t = os.clock() while os.clock() - t < 1 do end error('mine')", "stop_on_error": true}),
    );
    raw.send(Chan::Shell, frames);
    std::thread::sleep(Duration::from_millis(300));
    let mut other = k.client(); // queued behind it, from another client
    let cell = run_cell(&mut other, "'other client'");
    println!("another client's request queued behind a failing cell: {:?}", cell.reply);
    assert_eq!(cell.status(), "ok");
}

// ------------------------------------------------------------------------------------------------
// Regression tests from the wire fuzzer (fuzz/fuzz_targets/wire_decode.rs and tests/soak.rs)
// ------------------------------------------------------------------------------------------------

#[test]
fn wire_fuzz_regressions() {
    // Inputs the fuzzers found interesting; none may panic.
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![1],
        vec![2],
        b"\x02<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\"}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x01<IDS|MSG>\x00|\x00ZZ\x00|\x00{}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x01<IDS|MSG>\x00|\x00\xff\xfe\xfd\x00|\x00{}\x00|\x00{}\x00|\x00{}\x00|\x00{}".to_vec(),
        b"\x00<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\"}\x00|\x00{}\x00|\x00{}\x00|\x00{\"n\":1e999}".to_vec(),
        b"\x00<IDS|MSG>\x00|\x00\x00|\x00{\"msg_id\":\"a\",\"msg_type\":\"b\",\"msg_id\":\"c\"}\x00|\x00{}\x00|\x00{}\x00|\x00{\"n\":-0.0}".to_vec(),
    ];
    for case in &cases {
        wire_check::check(case);
    }
}
