//! The platform layer's promises, under whichever backend this build has (`make test` runs both).

use super::*;
use std::os::fd::AsRawFd;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn readable(fd: RawFd) -> bool {
    wait_readable(&[fd], Some(Duration::ZERO)).is_some()
}

#[test]
fn a_wakeup_is_readable_from_wake_to_clear_and_many_wakes_are_one() {
    let w = Wakeup::new().unwrap();
    assert!(!readable(w.fd()));
    for _ in 0..100_000 {
        w.wake(); // never blocks, even past a pipe's capacity
    }
    assert!(readable(w.fd()));
    w.clear();
    assert!(!readable(w.fd()));
    let w = std::sync::Arc::new(w);
    let other = w.clone();
    std::thread::spawn(move || other.wake());
    assert_eq!(wait_readable(&[w.fd()], Some(LONG)), Some(0), "a wake from another thread was lost");
}

#[test]
fn a_deadline_fires_once_passed_moves_when_set_again_and_can_be_cancelled() {
    let d = Deadline::new().unwrap();
    d.set(Some(Duration::from_millis(5)));
    assert_eq!(wait_readable(&[d.fd()], Some(LONG)), Some(0), "the deadline never fired");
    d.clear();
    assert!(!readable(d.fd()));
    d.set(Some(Duration::from_secs(3600)));
    d.set(Some(Duration::ZERO));
    assert_eq!(wait_readable(&[d.fd()], Some(LONG)), Some(0), "moving the deadline earlier did not fire it");
    d.clear();
    d.set(Some(Duration::from_millis(30)));
    d.set(None);
    assert_eq!(
        wait_readable(&[d.fd()], Some(Duration::from_millis(300))),
        None,
        "a cancelled deadline fired"
    );
}

#[test]
fn a_signal_becomes_a_readable_event() {
    let s = SignalEvents::new(&[libc::SIGUSR1]).unwrap();
    assert!(s.read().is_empty());
    // SAFETY: raise to this thread, which (Linux) blocked the signal, or whose handler writes a pipe.
    unsafe { libc::raise(libc::SIGUSR1) };
    assert_eq!(wait_readable(&[s.fd()], Some(LONG)), Some(0));
    assert_eq!(s.read(), vec![libc::SIGUSR1]);
    assert!(!readable(s.fd()));
}

#[test]
fn an_anonymous_file_has_its_size_no_name_and_closes_on_exec() {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::File::from(anonymous_file(16).unwrap());
    assert_eq!(f.metadata().unwrap().len(), 16);
    f.write_all(b"shared").unwrap();
    f.rewind().unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert!(back.starts_with("shared"));
    assert!(f.metadata().unwrap().nlink() == 0 || super::BACKEND == "linux", "the file has a name");
    // SAFETY: F_GETFD on our own fd.
    assert_ne!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
}

#[test]
fn accepted_and_passed_fds_close_on_exec_and_accept_does_not_wait() {
    let dir = std::env::temp_dir().join(format!("llmspell-sys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(accept_nonblocking(listener.as_raw_fd()).is_none());
    let client = std::os::unix::net::UnixStream::connect(dir.join("s")).unwrap();
    let conn = accept_nonblocking(listener.as_raw_fd()).expect("a waiting connection");
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: F_GETFD/F_GETFL on our own fd.
    let (fd_flags, fl) = unsafe {
        (libc::fcntl(conn.as_raw_fd(), libc::F_GETFD), libc::fcntl(conn.as_raw_fd(), libc::F_GETFL))
    };
    assert!(fd_flags & libc::FD_CLOEXEC != 0 && fl & libc::O_NONBLOCK != 0);

    let mut buf = [0u8; 8];
    let err = recv_with_fds(conn.as_raw_fd(), &mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    send_fd(&client, b"hi", 1);
    let (n, fds) = recv_with_fds(conn.as_raw_fd(), &mut buf).unwrap();
    assert_eq!((&buf[..n], fds.len()), (&b"hi"[..], 1));
    // SAFETY: F_GETFD on the fd we were passed.
    assert_ne!(unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
}

fn send_fd(to: &std::os::unix::net::UnixStream, bytes: &[u8], fd: RawFd) {
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: a msghdr over local buffers, with one SCM_RIGHTS message carrying `fd`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
        assert!(libc::sendmsg(to.as_raw_fd(), &msg, 0) > 0);
    }
}

#[test]
fn random_bytes_differ_and_the_umask_is_read_without_being_changed() {
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    random_bytes(&mut a).unwrap();
    random_bytes(&mut b).unwrap();
    assert_ne!(a, b);
    // SAFETY: umask has no failure; it is set back at once.
    let before = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    assert_eq!(current_umask(), before as u32);
    assert!(interrupt_signal() != libc::SIGINT && interrupt_signal() <= last_signal());
}

/// A process holding whatever makes it a client (`ClientProcess::current` in it), until killed.
// The child is handed to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
pub(super) fn client_child() -> (std::process::Child, serde_json::Value) {
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "sys::tests::be_a_client_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LLMSPELL_SYS_TEST_CLIENT", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client child said nothing");
        }
        // libtest may print "test NAME ... " on the same line first.
        if let Some(at) = line.find("CLIENT ") {
            return (child, serde_json::from_str(line[at + 7..].trim()).unwrap());
        }
    }
}

#[test]
#[ignore = "run by client_child in a process of its own"]
fn be_a_client_until_killed() {
    if std::env::var_os("LLMSPELL_SYS_TEST_CLIENT").is_some() {
        println!("CLIENT {}", ClientProcess::current());
        std::thread::sleep(Duration::from_secs(600));
    }
}

#[test]
fn a_client_is_alive_until_it_ends_and_its_end_is_seen_without_polling() {
    let me = ClientProcess::of(&ClientProcess::current()).expect("a client names itself");
    assert!(me.alive());
    assert!(!me.not_this_one().alive(), "another process passed for this one");
    assert!(ClientProcess::of(&serde_json::json!({ "pid": 1 })).is_none());

    let (mut child, named) = client_child();
    let client = ClientProcess::of(&named).expect("the child names itself");
    assert!(client.alive());
    let watch = client.watch_end().unwrap().expect("a live client can be watched");
    let again = client.watch_end().unwrap().expect("a second request of the same client");
    assert!(!readable(watch.as_raw_fd()));
    child.kill().unwrap();
    assert_eq!(wait_readable(&[watch.as_raw_fd()], Some(LONG)), Some(0), "its end went unseen");
    assert_eq!(wait_readable(&[again.as_raw_fd()], Some(LONG)), Some(0));
    child.wait().unwrap();
    assert!(!client.alive());
    assert!(client.watch_end().unwrap().is_none(), "an ended client was watched");
}
