//! Ownership: each client owns its requests (withdrawing a queued one, a client process that ends).

use super::*;

/// A process standing in for a client: the owner a request names in its metadata.
/// A process that is a client the way this build's platform layer names one (`sys::ClientProcess`),
/// and its `llmspell.owner` metadata.
fn client_process() -> (std::process::Child, Value) {
    let mut child = std::process::Command::new("sleep");
    child.arg("600");
    #[cfg(not(feature = "portable"))]
    let (child, owner) = {
        let child = child.spawn().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let start: u64 = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().parse().unwrap();
        let owner = json!({ "pid": child.id(), "start": start });
        (child, owner)
    };
    // POSIX: the client holds a flock on a file of its own for as long as it lives.
    #[cfg(feature = "portable")]
    let (child, owner) = {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let name = format!("llmspell-client-test-{}-{:?}", std::process::id(), std::time::Instant::now());
        let lock = std::env::temp_dir().join(name.replace(|c: char| !c.is_alphanumeric() && c != '-', ""));
        let file = std::fs::File::create(&lock).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: fcntl and flock between fork and exec, on an fd of ours.
        let child = unsafe {
            child.pre_exec(move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                if libc::flock(fd, libc::LOCK_EX) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
        .spawn()
        .unwrap();
        let owner = json!({ "pid": child.id(), "lock": lock });
        (child, owner)
    };
    (child, json!({ "llmspell": { "owner": owner } }))
}

fn execute(code: &str) -> Value {
    json!({ "code": code, "silent": false, "store_history": true, "allow_stdin": false, "stop_on_error": false })
}

#[test]
fn an_interrupt_naming_a_queued_request_withdraws_it_and_leaves_the_running_cell_alone() {
    let k = Kernel::start("withdraw", &[]);
    let gate = k.home.path("gate");
    let (a, b) = (k.raw(), k.raw());
    // Client A's cell runs until the test opens the gate.
    let started = k.home.path("started");
    let wait = format!(
        "io.open({:?}, 'w'):close() while not io.open({:?}) do end a_done = true return 'a'",
        started.display().to_string(),
        gate.display().to_string()
    );
    let (frames, a_id) = a.request("execute_request", execute(&wait));
    a.send(Chan::Shell, frames);
    assert!(wait_until(LONG, || started.exists()), "A's cell never started");
    // Client B queues a cell behind it, then withdraws it (Ctrl-C while queued).
    let (frames, b_id) = b.request("execute_request", execute("b_ran = true"));
    b.send(Chan::Shell, frames);
    let (frames, int_id) =
        b.request_with("interrupt_request", json!({}), json!({ "llmspell": { "interrupt": b_id } }));
    b.send(Chan::Control, frames);
    let mut seen = Vec::new();
    let reply = b.wait_reply(Chan::Control, &int_id, LONG, &mut seen).expect("an interrupt_reply");
    assert_eq!(reply.content["llmspell"]["withdrawn"], true, "{}", reply.content);
    std::fs::write(&gate, "").unwrap();
    let a_reply = a.wait_reply(Chan::Shell, &a_id, LONG, &mut seen).expect("A's reply");
    assert_eq!(a_reply.content["status"], "ok", "B's Ctrl-C hit A's cell: {}", a_reply.content);
    let b_reply = b.wait_reply(Chan::Shell, &b_id, LONG, &mut seen).expect("B's reply");
    assert_eq!(b_reply.content["status"], "aborted", "{}", b_reply.content);
    let mut c = k.client();
    assert_eq!(value_of(&mut c, "tostring(b_ran) .. ' ' .. tostring(a_done)"), "\"nil true\"");
    assert!(k.log().contains("withdrawn by its client"), "{}", k.log());
}

#[test]
fn a_cell_whose_client_process_ends_is_interrupted_and_its_queued_requests_never_run() {
    let k = Kernel::start("owner", &[]);
    let raw = k.raw();
    let (mut client, owner) = client_process();
    let started = k.home.path("started");
    let code = format!("io.open({:?}, 'w'):close() while true do end", started.display().to_string());
    let (frames, running) = raw.request_with("execute_request", execute(&code), owner.clone());
    raw.send(Chan::Shell, frames);
    let (frames, queued) = raw.request_with("execute_request", execute("queued_ran = true"), owner);
    raw.send(Chan::Shell, frames);
    let mut c = k.client();
    assert!(wait_until(LONG, || started.exists()), "the cell never started");
    client.kill().unwrap();
    client.wait().unwrap();
    let mut seen = Vec::new();
    let reply = raw
        .wait_reply(Chan::Shell, &running, LONG, &mut seen)
        .unwrap_or_else(|| panic!("no reply once its client is gone; log:\n{}", k.log()));
    assert_eq!(reply.content["ename"], "Interrupted", "{}", reply.content);
    let reply = raw.wait_reply(Chan::Shell, &queued, LONG, &mut seen).expect("the queued request's reply");
    assert_eq!(reply.content["status"], "aborted", "{}", reply.content);
    assert_eq!(value_of(&mut c, "tostring(queued_ran)"), "\"nil\"");
    assert!(k.log().contains("has gone: its cell is interrupted"), "{}", k.log());
}
