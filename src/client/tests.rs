//! The client against a scripted fake kernel: ROUTER sockets for shell, control and stdin and an XPUB
//! for iopub on 127.0.0.1, served by a thread that answers with signed messages as a script says.
//! Liveness is a lock file the fake holds, as our own kernels do.

use super::*;
use crate::connection::ConnectionInfo;
use crate::private_files;
use crossbeam_channel::{unbounded, Receiver, Sender};
use fs2::FileExt;
use std::io::Write;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const KEY: &str = "fake-kernel-key";
/// Long enough for a loaded 2-core machine; only reached when a test is about to fail.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the fake kernel saw from the client.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The execute request: its content and metadata.
    Request(Value, Value),
    Interrupt,
    InputReply(String),
}

/// How a script leaves the kernel.
enum End {
    /// Serving control requests until the test ends.
    Stay,
    /// Gone: the lock is released and the sockets closed, as when a kernel crashes.
    Die,
}

type Script = Box<dyn FnOnce(&Kernel, &Message) -> End + Send>;

/// The fake kernel's side, owned by its thread.
struct Kernel {
    shell: zmq::Socket,
    control: zmq::Socket,
    stdin: zmq::Socket,
    iopub: zmq::Socket,
    signer: Signer,
    session: String,
    seen: Sender<Seen>,
    _ctx: zmq::Context,
}

impl Kernel {
    fn frames(&self, parent: &Message, msg_type: &str, content: Value, ids: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        wire::encode_child(parent, msg_type, &self.session, &content, ids, &self.signer)
    }

    fn publish(&self, parent: &Message, msg_type: &str, content: Value) {
        self.iopub.send_multipart(self.frames(parent, msg_type, content, vec![]), 0).unwrap();
    }

    fn stream(&self, parent: &Message, name: &str, text: &str) {
        self.publish(parent, "stream", json!({ "name": name, "text": text }));
    }

    fn idle(&self, parent: &Message) {
        self.publish(parent, "status", json!({ "execution_state": "idle" }));
    }

    fn reply(&self, request: &Message, content: Value) {
        let frames = self.frames(request, "execute_reply", content, request.identities.clone());
        self.shell.send_multipart(frames, 0).unwrap();
    }

    /// The usual end of a cell: the reply, then idle.
    fn finish(&self, request: &Message, content: Value) -> End {
        self.reply(request, content);
        self.idle(request);
        End::Stay
    }

    /// An input_request to the client that sent `request` (the frames, so a test can send them again).
    fn input_request(&self, request: &Message, prompt: &str, password: bool) -> Vec<Vec<u8>> {
        let content = json!({ "prompt": prompt, "password": password });
        self.frames(request, "input_request", content, request.identities.clone())
    }

    /// Sends on stdin, waiting until the client's stdin socket is connected (ROUTER_MANDATORY).
    fn send_stdin(&self, frames: &[Vec<u8>]) {
        let deadline = Instant::now() + PATIENCE;
        while let Err(e) = self.stdin.send_multipart(frames, 0) {
            assert!(e == zmq::Error::EHOSTUNREACH && Instant::now() < deadline, "stdin send: {e}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn recv(&self, socket: &zmq::Socket, wait: Duration) -> Option<Message> {
        if socket.poll(zmq::POLLIN, wait.as_millis() as i64).ok()? == 0 {
            return None;
        }
        wire::decode(socket.recv_multipart(0).ok()?, &self.signer).ok()
    }

    /// The value of the next input_reply, if one comes within `wait`.
    fn input_reply(&self, wait: Duration) -> Option<String> {
        let m = self.recv(&self.stdin, wait)?;
        assert_eq!(m.msg_type(), "input_reply");
        let value = m.content["value"].as_str().unwrap().to_string();
        self.seen.send(Seen::InputReply(value.clone())).unwrap();
        Some(value)
    }

    /// Answers control requests until an interrupt_request arrives.
    fn wait_interrupt(&self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(m) = self.recv(&self.control, Duration::from_millis(20)) {
                if self.on_control(&m) == "interrupt_request" {
                    return;
                }
            }
        }
        panic!("no interrupt_request came");
    }

    fn on_control<'a>(&self, m: &'a Message) -> &'a str {
        let reply_type = m.msg_type().replace("_request", "_reply");
        if m.msg_type() == "interrupt_request" {
            self.seen.send(Seen::Interrupt).unwrap();
        }
        let frames = self.frames(m, &reply_type, json!({ "status": "ok" }), m.identities.clone());
        self.control.send_multipart(frames, 0).unwrap();
        m.msg_type()
    }

    /// A new iopub subscriber gets an iopub_welcome, so its handshake knows it is subscribed.
    fn on_subscription(&self) {
        let frame = self.iopub.recv_bytes(0).unwrap();
        if frame.first() == Some(&1) {
            let welcome = Message {
                header: wire::header("iopub_welcome", &self.session),
                parent_header: json!({}),
                metadata: json!({}),
                content: json!({ "subscription": "" }),
                ..Message::default()
            };
            self.iopub.send_multipart(wire::encode(&welcome, &self.signer), 0).unwrap();
        }
    }

    /// Serves control and iopub subscriptions; runs the script on the first execute request.
    fn serve(self, mut script: Option<Script>, stop: Arc<AtomicBool>, lock: std::fs::File) {
        while !stop.load(Ordering::Relaxed) {
            let mut items = [
                self.control.as_poll_item(zmq::POLLIN),
                self.shell.as_poll_item(zmq::POLLIN),
                self.iopub.as_poll_item(zmq::POLLIN),
            ];
            zmq::poll(&mut items, 20).unwrap();
            let (control, shell, iopub) =
                (items[0].is_readable(), items[1].is_readable(), items[2].is_readable());
            if iopub {
                self.on_subscription();
            }
            if control {
                if let Some(m) = self.recv(&self.control, Duration::ZERO) {
                    self.on_control(&m);
                }
            }
            let request = if shell { self.recv(&self.shell, Duration::ZERO) } else { None };
            if let Some((request, run)) = request.and_then(|r| Some((r, script.take()?))) {
                self.seen.send(Seen::Request(request.content.clone(), request.metadata.clone())).unwrap();
                if let End::Die = run(&self, &request) {
                    drop(lock);
                    return; // the sockets close with the kernel
                }
            }
        }
    }
}

/// A fake kernel in a private directory of its own, with `<dir>/k.json` and the lock `<dir>/k.lock`.
struct Fake {
    dir: PathBuf,
    conn: PathBuf,
    seen: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(script: Script) -> Fake {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("llmspell-fake-kernel-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        private_files::make_private_dir(&dir).unwrap();
        let ctx = zmq::Context::new();
        let bind = |kind| {
            let s = ctx.socket(kind).unwrap();
            s.set_linger(0).unwrap();
            s.bind("tcp://127.0.0.1:*").unwrap();
            let endpoint = s.get_last_endpoint().unwrap().unwrap();
            let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
            (s, port)
        };
        let (shell, shell_port) = bind(zmq::ROUTER);
        let (control, control_port) = bind(zmq::ROUTER);
        let (stdin, stdin_port) = bind(zmq::ROUTER);
        stdin.set_router_mandatory(true).unwrap();
        let (iopub, iopub_port) = bind(zmq::XPUB);
        let info = ConnectionInfo {
            ip: "127.0.0.1".into(),
            transport: "tcp".into(),
            shell_port,
            iopub_port,
            stdin_port,
            control_port,
            hb_port: 1, // unused: liveness is the lock
            key: KEY.into(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: "fake".into(),
            pid: None,
        };
        let conn = dir.join("k.json");
        info.write(&conn).unwrap();
        let lock = private_files::open_lock_file(&dir.join("k.lock")).unwrap();
        lock.try_lock_exclusive().unwrap();
        let (tx, seen) = unbounded();
        let session = wire::random_hex(8);
        let kernel =
            Kernel { shell, control, stdin, iopub, signer: Signer::new(KEY), session, seen: tx, _ctx: ctx };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || kernel.serve(Some(script), flag, lock));
        Fake { dir, conn, seen, stop, thread: Some(thread) }
    }

    fn client(&self) -> Client {
        Client::connect_file(&self.conn, PATIENCE).expect("connect to the fake kernel")
    }

    /// Everything the fake saw so far, the execute request left out.
    fn observed(&self) -> Vec<Seen> {
        self.seen.try_iter().filter(|s| !matches!(s, Seen::Request(..))).collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A script's failed assertion fails the test.
            if let Err(panic) = t.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one execute showed: the events as text, the prompts asked, and the outcome.
struct Outcome {
    events: Vec<String>,
    prompts: Vec<(String, bool)>,
    result: Result<ExecReply, ClientError>,
}

fn describe(event: Event) -> String {
    match event {
        Event::Stream { name, text } => format!("{name}:{text}"),
        Event::Display { data, execution_count } => {
            format!(
                "display[{}]:{}",
                execution_count.unwrap_or(0),
                data["text/plain"].as_str().unwrap_or("?")
            )
        }
        Event::Error { traceback, .. } => format!("error:{}", traceback.join("|")),
        Event::ClearOutput => "clear".into(),
        Event::Waiting { text } => format!("waiting:{text}"),
    }
}

/// Runs `code` on `fake` in Lines mode, answering input requests from `answers` in turn.
fn execute(fake: &Fake, sigint: Option<RawFd>, answers: Vec<Option<&str>>) -> Outcome {
    let mut client = fake.client();
    let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::Lines };
    let (mut events, mut prompts) = (Vec::new(), Vec::new());
    let mut answers = answers.into_iter();
    let result = client.execute(
        "code",
        &opts,
        sigint,
        &mut |ev| events.push(describe(ev)),
        &mut |prompt, password| {
            prompts.push((prompt.to_string(), password));
            match answers.next().flatten() {
                Some(line) => LineAnswer::Line(line.to_string()),
                None => LineAnswer::Interrupt,
            }
        },
    );
    Outcome { events, prompts, result }
}

fn ok() -> Value {
    json!({ "status": "ok", "execution_count": 1 })
}

#[test]
fn stream_output_results_and_clear_arrive_in_order_then_the_reply() {
    let fake = Fake::start(Box::new(|k, req| {
        k.stream(req, "stdout", "one\n");
        k.stream(req, "stderr", "two\n");
        k.publish(req, "execute_result", json!({ "data": { "text/plain": "42" }, "execution_count": 7 }));
        k.publish(req, "display_data", json!({ "data": { "text/plain": "shown" } }));
        k.publish(req, "clear_output", json!({ "wait": false }));
        k.finish(req, json!({ "status": "ok", "execution_count": 7 }))
    }));
    let out = execute(&fake, None, vec![]);
    let reply = out.result.unwrap();
    assert_eq!(out.events, ["stdout:one\n", "stderr:two\n", "display[7]:42", "display[0]:shown", "clear"]);
    assert_eq!((reply.status(), reply.content["execution_count"].as_u64()), ("ok", Some(7)));
}

#[test]
fn an_error_is_an_event_with_its_traceback_and_an_error_reply() {
    let fake = Fake::start(Box::new(|k, req| {
        let tb = ["[string]:1: boom", "stack traceback:"];
        k.publish(req, "error", json!({ "ename": "LuaError", "evalue": "boom", "traceback": tb }));
        k.finish(req, json!({ "status": "error", "ename": "LuaError", "evalue": "boom" }))
    }));
    let out = execute(&fake, None, vec![]);
    let reply = out.result.unwrap();
    assert_eq!(out.events, ["error:[string]:1: boom|stack traceback:"]);
    assert_eq!((reply.status(), reply.ename()), ("error", "LuaError"));
}

#[test]
fn output_after_the_reply_is_still_shown_until_idle() {
    let fake = Fake::start(Box::new(|k, req| {
        k.reply(req, ok());
        std::thread::sleep(Duration::from_millis(100));
        k.stream(req, "stdout", "late\n");
        k.idle(req);
        End::Stay
    }));
    let out = execute(&fake, None, vec![]);
    assert!(out.result.is_ok());
    assert_eq!(out.events, ["stdout:late\n"], "execute returned at the reply, before idle");
}

#[test]
fn output_of_other_requests_is_not_shown() {
    let fake = Fake::start(Box::new(|k, req| {
        // Ids are a prefix and a counter: request 10's id contains request 1's.
        for id in ["someone-else".to_string(), format!("{}0", req.msg_id())] {
            let header = json!({ "msg_id": id, "msg_type": "execute_request" });
            let other = Message { header, raw_header: vec![], ..req.clone() };
            k.stream(&other, "stdout", "not ours\n");
            k.idle(&other);
        }
        k.stream(req, "stdout", "ours\n");
        k.finish(req, ok())
    }));
    let out = execute(&fake, None, vec![]);
    assert!(out.result.is_ok());
    assert_eq!(out.events, ["stdout:ours\n"]);
}

#[test]
fn the_request_carries_the_options() {
    let fake = Fake::start(Box::new(|k, req| k.finish(req, ok())));
    let mut client = fake.client();
    let opts = ExecOptions { silent: true, store_history: false, stdin: StdinMode::Raw };
    client.execute("x = 1", &opts, None, &mut |_| {}, &mut |_, _| LineAnswer::Interrupt).unwrap();
    let Ok(Seen::Request(content, metadata)) = fake.seen.recv_timeout(PATIENCE) else { panic!("no request") };
    assert_eq!(
        (&content["code"], &content["silent"], &content["store_history"], &content["allow_stdin"]),
        (&json!("x = 1"), &json!(true), &json!(false), &json!(true))
    );
    // The owner is this process, named the platform's way (`sys::ClientProcess`).
    let owner = crate::request_owner::Owner::current();
    assert!(crate::sys::ClientProcess::of(&owner)
        .is_some_and(|o| o.pid == std::process::id() as i32 && o.alive()));
    assert_eq!(metadata["llmspell"], json!({ "stdin": "raw", "owner": owner }));
}

#[test]
fn an_input_request_is_asked_once_even_when_repeated_and_the_line_is_sent_back() {
    let fake = Fake::start(Box::new(|k, req| {
        let ask = k.input_request(req, "Password: ", true);
        k.send_stdin(&ask);
        k.send_stdin(&ask); // the kernel checking that we are still there
        let value = k.input_reply(PATIENCE).expect("an input_reply");
        assert_eq!(k.input_reply(Duration::from_millis(300)), None, "a repeated request was answered twice");
        k.stream(req, "stdout", &format!("got {value}\n"));
        k.finish(req, ok())
    }));
    let out = execute(&fake, None, vec![Some("secret")]);
    assert!(out.result.is_ok());
    assert_eq!(out.prompts, [("Password: ".to_string(), true)]);
    assert_eq!(out.events, ["stdout:got secret\n"]);
    assert_eq!(fake.observed(), [Seen::InputReply("secret".into())]);
}

#[test]
fn no_line_for_an_input_request_interrupts_the_code() {
    let fake = Fake::start(Box::new(|k, req| {
        k.send_stdin(&k.input_request(req, "> ", false));
        k.wait_interrupt();
        k.publish(req, "error", json!({ "ename": "Interrupted", "traceback": ["interrupted"] }));
        k.finish(req, json!({ "status": "error", "ename": "Interrupted" }))
    }));
    let out = execute(&fake, None, vec![None]);
    assert_eq!(out.result.unwrap().ename(), "Interrupted");
    assert_eq!(fake.observed(), [Seen::Interrupt]);
}

#[test]
fn ctrl_c_interrupts_the_kernel_and_the_third_gives_up() {
    // A kernel that never stops the code: it only answers the interrupt requests (and records them).
    let fake = Fake::start(Box::new(|_, _| End::Stay));
    let (mut press, pipe) = UnixStream::pair().unwrap();
    pipe.set_nonblocking(true).unwrap();
    let seen = fake.seen.clone();
    let presser = std::thread::spawn(move || {
        let mut interrupts = 0;
        for press_no in 1..=3 {
            press.write_all(b"\x03").unwrap();
            // Wait until the kernel saw this press's interrupt, so each press is read on its own.
            while press_no < 3
                && seen.recv_timeout(PATIENCE).expect("an interrupt_request") != Seen::Interrupt
            {}
            interrupts += (press_no < 3) as u32;
        }
        interrupts
    });
    let out = execute(&fake, Some(pipe.as_raw_fd()), vec![]);
    assert!(matches!(out.result, Err(ClientError::Interrupted)), "{:?}", out.result.err());
    assert_eq!(presser.join().unwrap(), 2, "the first two Ctrl-C each send an interrupt_request");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fake.observed(), [], "the third Ctrl-C sends none: the client gives up");
}

#[test]
fn a_kernel_that_dies_while_running_is_reported_as_dead() {
    let fake = Fake::start(Box::new(|k, req| {
        k.stream(req, "stdout", "partial\n");
        End::Die
    }));
    // In a thread of its own, so a client that never notices fails the test instead of hanging it.
    let client = fake.client();
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        let mut client = client;
        let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::None };
        let mut events = Vec::new();
        let result = client.execute("code", &opts, None, &mut |ev| events.push(describe(ev)), &mut |_, _| {
            LineAnswer::Interrupt
        });
        let _ = tx.send((result, events));
    });
    let (result, events) = rx.recv_timeout(PATIENCE).expect("the client never noticed the kernel died");
    assert!(matches!(result, Err(ClientError::KernelDied { running: true })), "{:?}", result.err());
    assert_eq!(events, ["stdout:partial\n"]);
}

#[test]
fn connecting_to_a_kernel_whose_lock_is_free_says_it_is_not_running() {
    let mut fake = Fake::start(Box::new(|_, _| End::Stay));
    fake.stop.store(true, Ordering::Relaxed);
    fake.thread.take().unwrap().join().unwrap(); // the lock goes with the thread
    let err = Client::connect_file(&fake.conn, PATIENCE).err().expect("no client for a dead kernel");
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("the kernel of {} is not running", fake.conn.display()));
}
