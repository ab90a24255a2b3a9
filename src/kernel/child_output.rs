//! Output of the kernel's child processes (`os.execute`, `io.popen`), which write to fds 1 and 2.

use super::iopub::Publisher;
use super::spawn;
use crate::wire::Message;
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Output that child processes of user code write (os.execute, io.popen's stderr) to fds 1 and 2:
/// a thread forwards it as stream output of the running execute request, so `os.execute("ls")`
/// shows its listing like `lua` would; between requests it is discarded. The kernel's own stdout
/// and stderr (a terminal, Jupyter's server log) never see user output.
pub(super) struct ChildOutput {
    /// The execute request whose output this is, while one runs.
    parent: std::sync::Mutex<Option<Arc<Message>>>,
    flush_requests: Sender<Sender<()>>,
    wake_fd: i32,
    /// Set at shutdown: the thread ends and closes its socket, so the context can terminate.
    stopping: AtomicBool,
}

impl ChildOutput {
    /// Redirects fds 1 and 2 into pipes and starts the forwarding thread.
    pub(super) fn start(publisher: Publisher) -> Result<Arc<ChildOutput>, String> {
        let pipe = || -> Result<[i32; 2], String> {
            use std::os::fd::IntoRawFd;
            let (r, w) = crate::sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
            crate::sys::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&r));
            Ok([r.into_raw_fd(), w.into_raw_fd()])
        };
        let (out, err, wake) = (pipe()?, pipe()?, pipe()?);
        // SAFETY: dup2 of our own pipe ends onto 1 and 2; dup2 clears CLOEXEC on the new fds, so
        // children inherit them. The originals are closed: fds 1 and 2 keep the pipes open.
        unsafe {
            libc::dup2(out[1], 1);
            libc::dup2(err[1], 2);
            libc::close(out[1]);
            libc::close(err[1]);
        }
        let (flush_tx, flush_rx) = crossbeam_channel::unbounded::<Sender<()>>();
        let shared = Arc::new(ChildOutput {
            parent: std::sync::Mutex::new(None),
            flush_requests: flush_tx,
            wake_fd: wake[1],
            stopping: AtomicBool::new(false),
        });
        let me = shared.clone();
        spawn("child-output", move || me.forward([out[0], err[0]], wake[0], flush_rx, publisher));
        Ok(shared)
    }

    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: a one-byte write to our own pipe.
        unsafe { libc::write(self.wake_fd, b"!".as_ptr() as *const libc::c_void, 1) };
    }

    pub(super) fn set_parent(&self, parent: Option<Arc<Message>>) {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = parent;
    }

    /// Returns once everything written to the pipes so far has been published.
    pub(super) fn sync(&self) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.flush_requests.send(ack_tx).is_ok() {
            // SAFETY: a one-byte write to our own pipe.
            unsafe { libc::write(self.wake_fd, b"!".as_ptr() as *const libc::c_void, 1) };
            let _ = ack_rx.recv_timeout(Duration::from_secs(1));
        }
    }

    fn forward(
        &self,
        pipes: [i32; 2],
        wake: i32,
        flush_requests: Receiver<Sender<()>>,
        publisher: Publisher,
    ) {
        let mut buf = vec![0u8; super::iopub::STREAM_MESSAGE_BYTES];
        loop {
            let mut fds = [
                libc::pollfd { fd: pipes[0], events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pipes[1], events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: poll on a local array of valid fds.
            if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
                continue; // EINTR
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let flushing = fds[2].revents != 0;
            if flushing {
                // SAFETY: draining our own non-blocking wake pipe into a local buffer.
                while unsafe { libc::read(wake, buf.as_mut_ptr() as *mut libc::c_void, 64) } > 0 {}
            }
            for (i, name) in ["stdout", "stderr"].iter().enumerate() {
                // A flush drains what is there (bounded, in case a background child never stops).
                let mut budget = if flushing { 16 } else { 1 };
                while budget > 0 {
                    budget -= 1;
                    // SAFETY: reading into a local buffer from our own non-blocking pipe.
                    let n = unsafe { libc::read(pipes[i], buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                    if n <= 0 {
                        break;
                    }
                    let parent = self.parent.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(parent) = parent {
                        let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
                        publisher.publish(&parent, "stream", json!({ "name": name, "text": text }));
                    }
                }
            }
            if flushing {
                while let Ok(ack) = flush_requests.try_recv() {
                    let _ = ack.send(());
                }
            }
        }
    }
}
