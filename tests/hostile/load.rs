//! Load: 16 clients x N requests on one kernel.

use super::*;

const LOAD_CLIENTS: usize = 16;
const LOAD_REQUESTS: usize = 1000;
const LOAD_WINDOW: usize = 4;

/// The text request `parent` (`load-c-i`) prints: `tok-c-i` and a newline.
fn expected_text(parent: &str) -> Option<String> {
    let rest = parent.strip_prefix("load-")?;
    let (pc, pi) = rest.split_once('-')?;
    Some(format!("tok-{pc}-{pi}\n"))
}

/// One load client: its own context, DEALER (shell) and SUB (iopub). Request `i` of client `c` has
/// msg_id `load-c-i` and prints `tok-c-i`, so any message can be checked against its parent.
struct LoadClient {
    c: usize,
    signer: Signer,
    session: String,
    shell: zmq::Socket,
    sub: zmq::Socket,
    _ctx: zmq::Context,
    sent: usize,
    replies: HashSet<usize>,
    own_tokens: HashMap<usize, usize>,
    stream_seen: usize,
    idle_own: HashSet<usize>,
}

impl LoadClient {
    fn connect(info: &Value, c: usize) -> LoadClient {
        let ctx = zmq::Context::new();
        let ip = info["ip"].as_str().unwrap().to_string();
        let session = format!("load-session-{c}");
        let shell = ctx.socket(zmq::DEALER).unwrap();
        shell.set_linger(0).unwrap();
        shell.set_rcvhwm(0).unwrap();
        shell.set_identity(session.as_bytes()).unwrap();
        shell.connect(&format!("tcp://{ip}:{}", info["shell_port"])).unwrap();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_linger(0).unwrap();
        sub.set_rcvhwm(0).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(&format!("tcp://{ip}:{}", info["iopub_port"])).unwrap();
        LoadClient {
            c,
            signer: Signer::new(info["key"].as_str().unwrap()),
            session,
            shell,
            sub,
            _ctx: ctx,
            sent: 0,
            replies: HashSet::new(),
            own_tokens: HashMap::new(),
            stream_seen: 0,
            idle_own: HashSet::new(),
        }
    }

    /// Waits for our iopub_welcome, so no output is missed.
    fn wait_welcome(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if Instant::now() > deadline {
                return Err(format!("client {}: no iopub_welcome", self.c));
            }
            if self.sub.poll(zmq::POLLIN, 100).unwrap() > 0 {
                let m = wire::decode(self.sub.recv_multipart(0).unwrap(), &self.signer)
                    .map_err(|e| e.to_string())?;
                if m.msg_type() == "iopub_welcome" {
                    return Ok(());
                }
            }
        }
    }

    /// Sends requests until LOAD_WINDOW of them await their replies (or all are sent).
    fn send_window(&mut self) {
        let c = self.c;
        while self.sent < LOAD_REQUESTS && self.sent < self.replies.len() + LOAD_WINDOW {
            let sent = self.sent;
            let mut h = wire::header("execute_request", &self.session);
            h["msg_id"] = json!(format!("load-{c}-{sent}"));
            let msg = Message {
                header: h,
                parent_header: json!({}),
                metadata: json!({}),
                content: json!({"code": format!("print('tok-{c}-{sent}')"), "silent": false,
                    "store_history": false, "allow_stdin": false, "stop_on_error": false}),
                ..Message::default()
            };
            self.shell.send_multipart(wire::encode(&msg, &self.signer), 0).unwrap();
            self.sent += 1;
        }
    }

    /// Every reply waiting on shell: each must be an ok execute_reply to one of our own requests, once.
    fn read_replies(&mut self) -> Result<(), String> {
        let c = self.c;
        while let Ok(frames) = self.shell.recv_multipart(zmq::DONTWAIT) {
            let m = wire::decode(frames, &self.signer).map_err(|e| format!("client {c}: bad reply: {e}"))?;
            let parent = m.parent_msg_id().to_string();
            let i = parent
                .strip_prefix(&format!("load-{c}-"))
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or(format!("client {c} got a reply to someone else's request {parent}"))?;
            if m.msg_type() != "execute_reply" || m.content["status"] != "ok" {
                return Err(format!("client {c}: reply {} {}", m.msg_type(), m.content));
            }
            if !self.replies.insert(i) {
                return Err(format!("client {c}: two replies to request {i}"));
            }
        }
        Ok(())
    }

    /// Every message waiting on iopub: output (anyone's) must carry the text its parent printed; our
    /// own requests' tokens and idles are counted.
    fn read_iopub(&mut self) -> Result<(), String> {
        let c = self.c;
        while let Ok(frames) = self.sub.recv_multipart(zmq::DONTWAIT) {
            let m = wire::decode(frames, &self.signer).map_err(|e| format!("client {c}: bad iopub: {e}"))?;
            let parent = m.parent_msg_id();
            let own = parent.strip_prefix(&format!("load-{c}-")).and_then(|i| i.parse::<usize>().ok());
            match m.msg_type() {
                "stream" => {
                    self.stream_seen += 1;
                    let text = m.content["text"].as_str().unwrap_or("");
                    // Output is always parented to the request that printed it.
                    if expected_text(parent).as_deref() != Some(text) {
                        return Err(format!("client {c}: stream {text:?} parented to {parent}"));
                    }
                    if let Some(i) = own {
                        *self.own_tokens.entry(i).or_default() += 1;
                    }
                }
                "status" if m.content["execution_state"] == "idle" => {
                    if let Some(i) = own {
                        self.idle_own.insert(i);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Keeps reading until this client has seen every client's output. It must not give up while
    /// output is owed: silence is measured from the end of the last batch it read (on a loaded 2-core
    /// machine one batch of thousands of messages takes this thread seconds to decode), and only a long
    /// silence ends the wait. (It once ended after a 5 s "silence" that was this thread's own decoding
    /// time.)
    fn read_everyones_output(&mut self) -> Result<(), String> {
        let c = self.c;
        let total = LOAD_CLIENTS * LOAD_REQUESTS;
        let mut last_read = Instant::now();
        while self.stream_seen < total && last_read.elapsed() < Duration::from_secs(60) {
            if self.sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            while let Ok(frames) = self.sub.recv_multipart(zmq::DONTWAIT) {
                let m =
                    wire::decode(frames, &self.signer).map_err(|e| format!("client {c}: bad iopub: {e}"))?;
                if m.msg_type() == "stream" {
                    self.stream_seen += 1;
                    let text = m.content["text"].as_str().unwrap_or("");
                    if expected_text(m.parent_msg_id()).as_deref() != Some(text) {
                        return Err(format!("client {c}: stream {text:?} parented to {}", m.parent_msg_id()));
                    }
                }
            }
            last_read = Instant::now();
        }
        Ok(())
    }
}

/// One load client's run: LOAD_REQUESTS executes, LOAD_WINDOW at a time, reading shell and iopub
/// together; returns the replies and the stream messages it saw.
fn load_client(
    info: Value,
    c: usize,
    ready: std::sync::Arc<std::sync::Barrier>,
) -> Result<(usize, usize), String> {
    let mut client = LoadClient::connect(&info, c);
    client.wait_welcome()?;
    ready.wait(); // start together
    let started = Instant::now();
    while client.replies.len() < LOAD_REQUESTS || client.idle_own.len() < LOAD_REQUESTS {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "client {c}: timed out with {} replies, {} idles",
                client.replies.len(),
                client.idle_own.len()
            ));
        }
        client.send_window();
        let (shell_ready, sub_ready) = {
            let mut items = [client.shell.as_poll_item(zmq::POLLIN), client.sub.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, 1000).unwrap();
            (items[0].is_readable(), items[1].is_readable())
        };
        if shell_ready {
            client.read_replies()?;
        }
        if sub_ready {
            client.read_iopub()?;
        }
    }
    client.read_everyones_output()?;
    let dup: Vec<_> = client.own_tokens.iter().filter(|(_, n)| **n != 1).collect();
    if client.own_tokens.len() != LOAD_REQUESTS || !dup.is_empty() {
        return Err(format!(
            "client {c}: {} of its tokens arrived, duplicates {dup:?}",
            client.own_tokens.len()
        ));
    }
    Ok((client.replies.len(), client.stream_seen))
}

#[test]
fn sixteen_clients_each_get_their_own_replies_and_output_with_nothing_lost() {
    let _alone = floods_one_at_a_time();
    let k = Kernel::start("load", &[]);
    let info = k.info();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(LOAD_CLIENTS + 1));
    let t = Instant::now();
    let handles: Vec<_> = (0..LOAD_CLIENTS)
        .map(|c| {
            let (info, ready) = (info.clone(), ready.clone());
            std::thread::spawn(move || load_client(info, c, ready))
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let took = start.elapsed();
    let mut streams = Vec::new();
    for r in &results {
        match r {
            Ok((_, seen)) => streams.push(*seen),
            Err(e) => panic!("{e}\nlog tail:\n{}", tail(&k.log(), 20)),
        }
    }
    let total = LOAD_CLIENTS * LOAD_REQUESTS;
    println!(
        "{LOAD_CLIENTS} clients x {LOAD_REQUESTS} requests (window {LOAD_WINDOW}): {total} replies in {took:?} \
         ({:.0} req/s; setup {:?}); stream messages seen per client: min {} max {}",
        total as f64 / took.as_secs_f64(),
        start - t,
        streams.iter().min().unwrap(),
        streams.iter().max().unwrap()
    );
    // Every client subscribed before anyone sent, so each saw every client's output: none lost.
    assert!(
        streams.iter().all(|&n| n == total),
        "stream messages seen per client: {streams:?}\nlog tail:\n{}",
        tail(&k.log(), 20)
    );
    // And the kernel's own count agrees: it dropped nothing and set no subscriber aside.
    let iopub = k.iopub_counts();
    println!("kernel iopub counts: {iopub}");
    assert_eq!((iopub["dropped"].as_u64(), iopub["set_aside"].as_u64()), (Some(0), Some(0)), "{iopub}");
    k.assert_alive();
}
