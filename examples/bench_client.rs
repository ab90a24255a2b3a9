//! llmspell's own-client benchmark (no Python in the loop). `bench/bench.py` runs it and folds its
//! figures into the `make bench` table; it prints one JSON object on stdout.
//!
//! ```sh
//! cargo run --release --example bench_client -- --connection-file ~/.llmspell/kernels/default.json
//! cargo run --release --example bench_client -- --raw-only        # only the ZeroMQ floor
//! cargo run --release --example bench_client -- --mock-kernel FILE  # a do-nothing kernel (see below)
//! ```
//!
//! Figures:
//! - `execute_us`: no-op `execute_request` → `execute_reply` and iopub idle, through
//!   [`llmspell::client::Client::execute`] (p50/p99 over `--n` calls after `--warmup`).
//! - `kernel_info_us`: `kernel_info_request` on shell through [`Client::request`].
//! - `rps`: completed no-op executes per second with 1, 4 and 16 concurrent clients (threads, each its
//!   own `Client`), each running back to back for `--duration` seconds.
//! - `zmq_raw_us`: the floor — one DEALER→ROUTER→DEALER round trip over tcp loopback in this process
//!   (a ROUTER echo thread), frames shaped like a signed Jupyter execute request and reply.
//! - `zmq_execute_shape_us`: the same plus what a Jupyter execute also moves: a PUB socket publishing
//!   `busy` before and `idle` after the reply, the client waiting for reply and idle. The cost of the
//!   message pattern alone, without Lua, JSON or HMAC work in the loop.
//!
//! The floor and the kernel are measured in interleaved rounds, so drift in the machine's load falls on
//! both alike. `--mock-kernel FILE` instead runs a kernel that answers everything at once (bench.py
//! runs it through jupyter_client to show that client's own floor).

use llmspell::client::{Client, ExecOptions, StdinMode};
use llmspell::wire::{self, Message, Signer};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Args {
    connection_file: Option<PathBuf>,
    mock_kernel: Option<PathBuf>,
    n: usize,
    warmup: usize,
    clients: Vec<usize>,
    duration: f64,
    raw_n: usize,
    code: String,
    echo_server: bool,
    echo_iopub: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = pico_args::Arguments::from_env();
    if a.contains(["-h", "--help"]) {
        println!(
            "bench_client [--connection-file FILE] [--n 2000] [--warmup 200] [--clients 1,4,16] \
             [--duration 2.0] [--raw-n 20000] [--code 'local x = 1'] [--raw-only]\n\
             bench_client --mock-kernel CONNECTION_FILE   (a do-nothing Jupyter kernel: the client's floor)"
        );
        std::process::exit(0);
    }
    let raw_only = a.contains("--raw-only");
    let echo_server = a.contains("--echo-server");
    let echo_iopub = a.contains("--iopub");
    let connection_file: Option<PathBuf> = a
        .opt_value_from_os_str("--connection-file", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let clients: Option<String> = a.opt_value_from_str("--clients").map_err(|e| e.to_string())?;
    let mock_kernel: Option<PathBuf> = a
        .opt_value_from_os_str("--mock-kernel", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let args = Args {
        mock_kernel,
        connection_file: if raw_only { None } else { connection_file },
        n: a.opt_value_from_str("--n").map_err(|e| e.to_string())?.unwrap_or(2000),
        warmup: a.opt_value_from_str("--warmup").map_err(|e| e.to_string())?.unwrap_or(200),
        clients: clients
            .unwrap_or_else(|| "1,4,16".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--clients: {e}")))
            .collect::<Result<_, _>>()?,
        duration: a.opt_value_from_str("--duration").map_err(|e| e.to_string())?.unwrap_or(2.0),
        raw_n: a.opt_value_from_str("--raw-n").map_err(|e| e.to_string())?.unwrap_or(20_000),
        echo_server,
        echo_iopub,
        code: a
            .opt_value_from_str("--code")
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| "local x = 1".into()),
    };
    let rest = a.finish();
    if let Some(x) = rest.first() {
        return Err(format!("unexpected argument {x:?}"));
    }
    Ok(args)
}

/// p50/p99/mean/min of samples in microseconds.
fn summary(mut us: Vec<f64>) -> serde_json::Value {
    if us.is_empty() {
        return json!(null);
    }
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| us[((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1];
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    json!({
        "n": us.len(),
        "p50": round1(pct(0.50)),
        "p99": round1(pct(0.99)),
        "mean": round1(mean),
        "min": round1(us[0]),
        "max": round1(us[us.len() - 1]),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

const QUIET: ExecOptions = ExecOptions { silent: false, store_history: false, stdin: StdinMode::None };

/// One no-op execute: request → reply and idle. Fails on an error reply.
fn execute_once(c: &mut Client, code: &str) -> Result<(), String> {
    let reply = c
        .execute(code, &QUIET, None, &mut |_| {}, &mut |_, _| llmspell::client::LineAnswer::Interrupt)
        .map_err(|e| format!("execute failed: {e}"))?;
    if reply.status() != "ok" {
        return Err(format!("execute replied {}", reply.content));
    }
    Ok(())
}

fn connect(path: &Path) -> Result<Client, String> {
    Client::connect_file(path, Duration::from_secs(10)).map_err(|e| e.to_string())
}

/// `clients` threads, each with its own Client, executing back to back for `duration` seconds.
fn bench_concurrent(path: &Path, clients: usize, args: &Args) -> Result<serde_json::Value, String> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = connect(path)?;
        execute_once(&mut c, &args.code)?;
        conns.push(c);
    }
    let barrier = Arc::new(Barrier::new(clients + 1));
    let duration = Duration::from_secs_f64(args.duration);
    let mut handles = Vec::new();
    for mut c in conns {
        let barrier = barrier.clone();
        let code = args.code.clone();
        handles.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
            barrier.wait();
            let start = Instant::now();
            let mut lat = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                execute_once(&mut c, &code)?;
                lat.push(micros(t.elapsed()));
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(lat)) => all.extend(lat),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a client thread panicked".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let done = all.len();
    Ok(json!({
        "clients": clients,
        "requests": done,
        "seconds": round1(secs * 1000.0) / 1000.0,
        "rps": round1(done as f64 / secs),
        "latency_us": summary(all),
        "errors": errors,
    }))
}

type Frames = Vec<Vec<u8>>;

/// Frames shaped like a signed Jupyter execute request, its reply and a status (sizes of the real thing).
fn jupyter_like_frames() -> (Frames, Frames, Frames) {
    let signer = Signer::new(&wire::random_hex(32));
    let session = wire::random_hex(16);
    let request = Message {
        header: wire::header("execute_request", &session),
        parent_header: json!({}),
        metadata: json!({}),
        content: json!({
            "code": "local x = 1", "silent": false, "store_history": false,
            "user_expressions": {}, "allow_stdin": false, "stop_on_error": false,
        }),
        ..Message::default()
    };
    let mut reply = wire::child(
        &request,
        "execute_reply",
        &session,
        json!({
            "status": "ok", "execution_count": 1, "user_expressions": {}, "payload": [],
        }),
    );
    reply.identities = vec![];
    let mut status = wire::child(&request, "status", &session, json!({ "execution_state": "idle" }));
    status.identities = vec![b"status".to_vec()];
    (wire::encode(&request, &signer), wire::encode(&reply, &signer), wire::encode(&status, &signer))
}

/// The floor: a ROUTER echo server and a DEALER over tcp loopback; optionally a PUB socket publishing
/// busy before and idle after each reply (the shape of a Jupyter execute). The server is a thread of
/// this process (sharing its ZeroMQ I/O thread with the client: fewer thread wake-ups than any two
/// processes can have) or, as a client and a kernel are, another process (`--echo-server`). Kept
/// alive across rounds so it can be measured interleaved with the kernel.
struct RawRig {
    dealer: zmq::Socket,
    sub: zmq::Socket,
    request: Vec<Vec<u8>>,
    with_iopub: bool,
    server: Option<std::thread::JoinHandle<()>>,
    child: Option<std::process::Child>,
    request_bytes: usize,
    reply_bytes: usize,
    _ctx: zmq::Context,
}

/// Binds a ROUTER and a PUB on free loopback ports: (router, publisher, their endpoints).
fn echo_sockets(ctx: &zmq::Context) -> Result<(zmq::Socket, zmq::Socket, String, String), String> {
    let router = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
    router.bind("tcp://127.0.0.1:*").map_err(|e| e.to_string())?;
    let publisher = ctx.socket(zmq::PUB).map_err(|e| e.to_string())?;
    publisher.bind("tcp://127.0.0.1:*").map_err(|e| e.to_string())?;
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let pub_endpoint = publisher.get_last_endpoint().unwrap().unwrap();
    Ok((router, publisher, endpoint, pub_endpoint))
}

/// Answers each request with a reply shaped like an execute_reply (and busy/idle statuses around
/// it when `with_iopub`), until a "stop" request.
fn echo_serve(router: zmq::Socket, publisher: zmq::Socket, with_iopub: bool) {
    let (_, reply, status) = jupyter_like_frames();
    loop {
        let Ok(mut frames) = router.recv_multipart(0) else { return };
        if frames.len() == 2 && frames[1] == b"stop" {
            return;
        }
        let identity = frames.remove(0);
        if with_iopub {
            let _ = publisher.send_multipart(status.iter(), 0);
        }
        let mut out = Vec::with_capacity(reply.len() + 1);
        out.push(identity);
        out.extend(reply.iter().cloned());
        let _ = router.send_multipart(out, 0);
        if with_iopub {
            let _ = publisher.send_multipart(status.iter(), 0);
        }
    }
}

/// `bench_client --echo-server [--iopub]`: the floor's server as its own process; prints its two
/// endpoints on one line, then serves until stopped.
fn echo_server_process(with_iopub: bool) -> Result<(), String> {
    let ctx = zmq::Context::new();
    let (router, publisher, endpoint, pub_endpoint) = echo_sockets(&ctx)?;
    println!("{endpoint} {pub_endpoint}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    echo_serve(router, publisher, with_iopub);
    Ok(())
}

impl RawRig {
    fn new(with_iopub: bool, separate_process: bool) -> Result<RawRig, String> {
        let ctx = zmq::Context::new();
        let (mut server, mut child) = (None, None);
        let (endpoint, pub_endpoint) = if separate_process {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = std::process::Command::new(exe);
            cmd.arg("--echo-server").stdout(std::process::Stdio::piped());
            if with_iopub {
                cmd.arg("--iopub");
            }
            let mut c = cmd.spawn().map_err(|e| format!("cannot start the echo server: {e}"))?;
            let mut line = String::new();
            use std::io::BufRead;
            std::io::BufReader::new(c.stdout.take().expect("piped"))
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            child = Some(c);
            let mut parts = line.split_whitespace().map(String::from);
            match (parts.next(), parts.next()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(format!("the echo server said {line:?}")),
            }
        } else {
            let (router, publisher, endpoint, pub_endpoint) = echo_sockets(&ctx)?;
            server = Some(std::thread::spawn(move || echo_serve(router, publisher, with_iopub)));
            (endpoint, pub_endpoint)
        };
        let (request, reply, _) = jupyter_like_frames();
        let request_bytes = request.iter().map(|f| f.len()).sum();
        let reply_bytes = reply.iter().map(|f| f.len()).sum();
        let dealer = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
        dealer.set_linger(0).map_err(|e| e.to_string())?;
        dealer.connect(&endpoint).map_err(|e| e.to_string())?;
        let sub = ctx.socket(zmq::SUB).map_err(|e| e.to_string())?;
        sub.set_linger(0).map_err(|e| e.to_string())?;
        sub.set_subscribe(b"").map_err(|e| e.to_string())?;
        sub.connect(&pub_endpoint).map_err(|e| e.to_string())?;
        let rig =
            RawRig { dealer, sub, request, with_iopub, server, child, request_bytes, reply_bytes, _ctx: ctx };
        if with_iopub {
            // PUB drops until the subscription has arrived: go round until a status comes through.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                rig.dealer.send_multipart(rig.request.iter(), 0).map_err(|e| e.to_string())?;
                rig.dealer.recv_multipart(0).map_err(|e| e.to_string())?;
                if rig.sub.poll(zmq::POLLIN, 50).map_err(|e| e.to_string())? > 0 {
                    while rig.sub.recv_multipart(zmq::DONTWAIT).is_ok() {}
                    break;
                }
                if Instant::now() > deadline {
                    return Err("the PUB/SUB pair never connected".into());
                }
            }
        }
        Ok(rig)
    }

    fn round_trip(&self) -> Result<f64, String> {
        let t = Instant::now();
        self.dealer.send_multipart(self.request.iter(), 0).map_err(|e| e.to_string())?;
        self.dealer.recv_multipart(0).map_err(|e| e.to_string())?;
        if self.with_iopub {
            self.sub.recv_multipart(0).map_err(|e| e.to_string())?; // busy
            self.sub.recv_multipart(0).map_err(|e| e.to_string())?; // idle
        }
        Ok(micros(t.elapsed()))
    }
}

impl Drop for RawRig {
    fn drop(&mut self) {
        let _ = self.dealer.send_multipart([&b"stop"[..]], 0);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// A Jupyter kernel that does nothing: binds what the connection file says and answers every shell or
/// control request at once (busy, execute_input for executes, the reply, idle), signed as the
/// protocol wants. Through jupyter_client it shows what the client and ZeroMQ alone cost.
fn mock_kernel(path: &Path) -> Result<(), String> {
    let info = llmspell::connection::ConnectionInfo::read(path)?;
    let signer = Signer::new(&info.key);
    let session = wire::random_hex(16);
    let ctx = zmq::Context::new();
    let bind = |kind, port: u16| -> Result<zmq::Socket, String> {
        let s = ctx.socket(kind).map_err(|e| e.to_string())?;
        s.set_linger(0).map_err(|e| e.to_string())?;
        s.bind(&info.endpoint(port)).map_err(|e| format!("bind {}: {e}", info.endpoint(port)))?;
        Ok(s)
    };
    let shell = bind(zmq::ROUTER, info.shell_port)?;
    let control = bind(zmq::ROUTER, info.control_port)?;
    let _stdin = bind(zmq::ROUTER, info.stdin_port)?;
    let iopub = bind(zmq::PUB, info.iopub_port)?;
    let hb = bind(zmq::REP, info.hb_port)?;
    std::thread::spawn(move || {
        while let Ok(m) = hb.recv_msg(0) {
            if hb.send(m, 0).is_err() {
                return;
            }
        }
    });
    let publish = |parent: &Message, msg_type: &str, content: serde_json::Value| {
        let mut m = wire::child(parent, msg_type, &session, content);
        m.identities = vec![msg_type.as_bytes().to_vec()];
        let _ = iopub.send_multipart(wire::encode(&m, &signer), 0);
    };
    let mut count = 0u64;
    loop {
        let mut items = [shell.as_poll_item(zmq::POLLIN), control.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, -1).map_err(|e| e.to_string())?;
        let ready = [items[0].is_readable(), items[1].is_readable()];
        for (socket, readable) in [(&shell, ready[0]), (&control, ready[1])] {
            if !readable {
                continue;
            }
            let Ok(frames) = socket.recv_multipart(0) else { continue };
            let Ok(req) = wire::decode(frames, &signer) else { continue };
            publish(&req, "status", json!({ "execution_state": "busy" }));
            let t = req.msg_type().to_string();
            let content = match t.as_str() {
                "kernel_info_request" => llmspell::kernel::kernel_info_content(json!({}), json!({})),
                "execute_request" => {
                    count += 1;
                    publish(
                        &req,
                        "execute_input",
                        json!({ "code": req.content["code"], "execution_count": count }),
                    );
                    json!({ "status": "ok", "execution_count": count, "user_expressions": {}, "payload": [] })
                }
                _ => json!({ "status": "ok", "restart": false }),
            };
            let reply_type = t.strip_suffix("_request").map(|b| format!("{b}_reply")).unwrap_or(t.clone());
            let mut reply = wire::child(&req, &reply_type, &session, content);
            reply.identities = req.identities.clone();
            let _ = socket.send_multipart(wire::encode(&reply, &signer), 0);
            publish(&req, "status", json!({ "execution_state": "idle" }));
            if t == "shutdown_request" {
                return Ok(());
            }
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_client: {e}");
            std::process::exit(2);
        }
    };
    if args.echo_server {
        if let Err(e) = echo_server_process(args.echo_iopub) {
            eprintln!("bench_client --echo-server: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(path) = &args.mock_kernel {
        if let Err(e) = mock_kernel(path) {
            eprintln!("bench_client --mock-kernel: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut out = json!({});
    let mut errors: Vec<String> = Vec::new();
    let rigs = (RawRig::new(false, false), RawRig::new(false, true), RawRig::new(true, true));
    let (raw, raw_2proc, shape) = match rigs {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            println!("{}", json!({ "errors": [format!("raw zmq: {e}")] }));
            return;
        }
    };
    let mut client = match &args.connection_file {
        Some(path) => match connect(path) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(format!("connect: {e}"));
                None
            }
        },
        None => None,
    };
    // Warm up, then rounds that interleave the floor and the kernel, so drift in the machine's load
    // falls on both alike.
    // raw (one process), raw (two processes), execute shape (two processes), execute, kernel_info
    type Lat = [Vec<f64>; 5];
    let mut lat: Lat = Default::default();
    let rounds = 10;
    let run = |lat: &mut Lat,
               client: &mut Option<Client>,
               n: usize,
               raw_n: usize,
               keep: bool|
     -> Result<(), String> {
        for (i, rig, reps) in [(0, &raw, raw_n), (1, &raw_2proc, raw_n), (2, &shape, raw_n / 2)] {
            for _ in 0..reps {
                let t = rig.round_trip()?;
                if keep {
                    lat[i].push(t);
                }
            }
        }
        if let Some(c) = client.as_mut() {
            for _ in 0..n {
                let t = Instant::now();
                execute_once(c, &args.code)?;
                if keep {
                    lat[3].push(micros(t.elapsed()));
                }
            }
            for _ in 0..n / 2 {
                let t = Instant::now();
                c.request("kernel_info_request", json!({}), Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                if keep {
                    lat[4].push(micros(t.elapsed()));
                }
            }
        }
        Ok(())
    };
    let mut result = run(&mut lat, &mut client, args.warmup, args.warmup, false);
    for _ in 0..rounds {
        if result.is_err() {
            break;
        }
        result = run(&mut lat, &mut client, args.n.div_ceil(rounds), args.raw_n.div_ceil(rounds), true);
    }
    if let Err(e) = result {
        errors.push(format!("round trips: {e}"));
    }
    let [raw_us, raw_2proc_us, shape_us, execute_us, kernel_info_us] = lat;
    let mut s = summary(raw_us);
    s["request_bytes"] = json!(raw.request_bytes);
    s["reply_bytes"] = json!(raw.reply_bytes);
    out["zmq_raw_us"] = s;
    out["zmq_raw_2proc_us"] = summary(raw_2proc_us);
    out["zmq_execute_shape_us"] = summary(shape_us);
    drop((raw, raw_2proc, shape));
    if let Some(path) = &args.connection_file {
        if client.is_some() {
            out["execute_us"] = summary(execute_us);
            out["kernel_info_us"] = summary(kernel_info_us);
        }
        drop(client);
        let mut rps = json!({});
        for &k in &args.clients {
            match bench_concurrent(path, k, &args) {
                Ok(v) => rps[k.to_string()] = v,
                Err(e) => errors.push(format!("{k} clients: {e}")),
            }
        }
        out["concurrent"] = rps;
    }
    out["errors"] = json!(errors);
    println!("{}", serde_json::to_string(&out).expect("json"));
}
