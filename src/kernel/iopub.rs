//! The iopub channel: one XPUB socket shared by every thread that publishes, its thread (welcomes,
//! held and queued messages), and the counters that show nothing was lost.

use crate::wire::{self, Message, Signer};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Messages queued per iopub subscriber before the kernel waits for it (and then drops for it).
/// libzmq counts messages, not bytes: with stream output cut into messages of at most
/// STREAM_MESSAGE_BYTES, a subscriber that stops reading holds at most about IOPUB_HWM × that
/// (16 MiB) of the kernel's memory, whatever is printed.
const IOPUB_HWM: i32 = 1000;
/// The most text one `stream` message carries (see IOPUB_HWM).
pub(super) const STREAM_MESSAGE_BYTES: usize = 16 << 10;
/// How long a send waits for a subscriber whose queue is full before that subscriber is set aside.
/// Long enough for a reader that keeps reading (libzmq hands a reader's progress back in batches of
/// half its high-water mark: 0.5 s for a pyzmq client reading 1 000 messages/s), short enough that
/// a client that never reads iopub costs the others one short pause.
const IOPUB_STALL_MS: i32 = 1000;

/// Sets up the XPUB socket: every subscription reported, and sends that wait for slow readers.
pub(super) fn configure(socket: &mut zmq::Socket) -> Result<(), String> {
    // Every subscription, even a repeated topic, must reach us so each subscriber gets a welcome.
    socket.set_xpub_verbose(true).map_err(|e| e.to_string())?;
    // And every unsubscription, which a subscriber's leaving makes: the memory its queue held can
    // then go back to the system (`memory.rs`).
    set_int_option(socket, zmq_sys::ZMQ_XPUB_VERBOSER, 1)?;
    socket.set_sndhwm(IOPUB_HWM).map_err(|e| e.to_string())?;
    // Without XPUB_NODROP a PUB socket silently drops messages for a subscriber that is behind;
    // with it the send waits (bounded by SNDTIMEO) so a flood of output arrives complete.
    socket.set_sndtimeo(IOPUB_STALL_MS).map_err(|e| e.to_string())?;
    set_int_option(socket, zmq_sys::ZMQ_XPUB_NODROP, 1)
}

/// Sets an int socket option the `zmq` crate does not wrap (XPUB_NODROP).
fn set_int_option(socket: &mut zmq::Socket, option: u32, value: i32) -> Result<(), String> {
    let value: std::os::raw::c_int = value;
    // SAFETY: the pointer is the live socket's own; these options take an int.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option as std::os::raw::c_int,
            &value as *const _ as *const std::os::raw::c_void,
            std::mem::size_of_val(&value),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: zmq_errno reads the calling thread's errno.
    let errno = unsafe { zmq_sys::zmq_errno() };
    Err(format!("cannot set option {option} on the iopub socket: {}", zmq::Error::from_raw(errno)))
}

/// The iopub thread: greets each new subscriber, and sends what is held or queued when the timer
/// fires. It waits on the socket's ZMQ_FD (readable when the socket may have news) rather than on the
/// socket itself, which other threads use under the lock, and on the timer.
pub(super) fn iopub_loop(iopub: Arc<IopubSocket>, fd: std::os::unix::io::RawFd) {
    loop {
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: iopub.timer.fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on a local array. The deadline lives as long as `iopub`. ZMQ_FD closes with
        // the socket, which any publishing thread may drop on ETERM; it then fires the deadline, so
        // this thread wakes, finds the socket gone and returns (a poll on a closed fd just reports it).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            iopub.timer.clear();
            iopub.release();
        }
        if !iopub.greet_subscribers() {
            return;
        }
    }
}

/// One encoded message: its frames.
type Frames = Vec<Vec<u8>>;

/// How long `busy` and `execute_input` may be held back before they go out on their own.
const IOPUB_HOLD: Duration = Duration::from_millis(2);
/// Messages from threads that must not wait for the socket (control), waiting for the next sender.
const IOPUB_QUEUE: usize = 1000;

/// The XPUB socket, shared by every thread that publishes: each sends under the lock, so a message
/// goes from its thread straight to ZeroMQ (no hand-off to another thread on the request path).
/// Sockets are not thread-safe, but one used by one thread at a time, with the lock's memory barrier
/// between, is what ZeroMQ allows.
///
/// A request's opening messages (busy, execute_input) are held until the next message, the reply,
/// or IOPUB_HOLD, whichever comes first: a quick request's iopub messages and its reply then leave
/// together, and ZeroMQ's I/O thread is woken once instead of once per message — on a small machine
/// those wake-ups are most of a round trip.
///
/// The control thread must answer while a publisher is stuck on a subscriber that stopped reading:
/// it never waits for the lock, but queues (see `send_nowait`).
///
/// Sends wait for slow subscribers (XPUB_NODROP), so a flood of output arrives complete. A subscriber
/// that reads nothing for IOPUB_STALL_MS (a suspended `jupyter console`, say) must not make every
/// later send wait that long, for everyone: the message that waited is sent once more without
/// waiting, which skips the full subscriber and sets it aside (libzmq deactivates a pipe it could not
/// write to) until it has read its backlog. The others lose nothing.
pub(super) struct IopubSocket {
    state: std::sync::Mutex<IopubState>,
    counts: IopubCounts,
    /// Bytes handed to ZeroMQ since freed memory was last given back (`memory.rs`).
    pub(super) output: super::memory::OutputSinceTrim,
    queue: (Sender<Frames>, Receiver<Frames>),
    /// Set while messages are held or queued; the iopub thread sends them when it passes.
    timer: crate::sys::Deadline,
    signer: Signer,
    session: String,
}

/// What iopub did since the kernel started (kernel_info's `llmspell.iopub`, and the log at shutdown).
#[derive(Default)]
struct IopubCounts {
    /// Messages handed to ZeroMQ.
    sent: AtomicU64,
    /// Messages no subscriber got: a queue for control's messages that overflowed, a failed send.
    dropped: AtomicU64,
    /// Sends that had to wait for a subscriber whose queue was full (a slow reader).
    waited: AtomicU64,
    /// Times a subscriber that left a full queue unread for IOPUB_STALL_MS was set aside: it misses
    /// the message that waited, and what follows until it has read its backlog.
    set_aside: AtomicU64,
}

impl IopubCounts {
    fn add(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn to_json(&self) -> Value {
        json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "waited": self.waited.load(Ordering::Relaxed),
            "set_aside": self.set_aside.load(Ordering::Relaxed),
        })
    }
}

struct IopubState {
    /// None once the context has terminated.
    socket: Option<zmq::Socket>,
    held: Vec<Vec<Vec<u8>>>,
}

impl IopubSocket {
    pub(super) fn new(socket: zmq::Socket, signer: Signer, session: String) -> Result<IopubSocket, String> {
        let timer = crate::sys::Deadline::new().map_err(|e| format!("cannot create a timer: {e}"))?;
        let state = IopubState { socket: Some(socket), held: Vec::new() };
        Ok(IopubSocket {
            state: std::sync::Mutex::new(state),
            counts: IopubCounts::default(),
            output: Default::default(),
            queue: crossbeam_channel::bounded(IOPUB_QUEUE),
            timer,
            signer,
            session,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IopubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_timer(&self, after: Option<Duration>) {
        self.timer.set(after);
    }

    /// Wakes the iopub thread now (to send what is queued, or to notice the socket has gone).
    fn wake(&self) {
        self.set_timer(Some(Duration::from_nanos(1)));
    }

    /// Sends a message, after any held or queued ones.
    fn send(&self, frames: Vec<Vec<u8>>) {
        let mut state = self.lock();
        self.flush(&mut state, Some(frames));
    }

    /// Sends a message without ever waiting for a subscriber: it is queued, and sent now if the
    /// socket is free, else by whoever holds it next (or the iopub thread, woken for it).
    fn send_nowait(&self, frames: Vec<Vec<u8>>) {
        if self.queue.0.try_send(frames).is_err() {
            let n = IopubCounts::add(&self.counts.dropped);
            log::warn!(
                "iopub: {IOPUB_QUEUE} messages wait for a stalled subscriber; message dropped ({n} dropped so far)"
            );
        }
        match self.state.try_lock() {
            Ok(mut state) => self.flush(&mut state, None),
            Err(std::sync::TryLockError::Poisoned(e)) => self.flush(&mut e.into_inner(), None),
            Err(std::sync::TryLockError::WouldBlock) => self.wake(),
        }
    }

    /// Holds a message back (see the type's comment).
    fn hold(&self, frames: Vec<Vec<u8>>) {
        let mut state = self.lock();
        if state.held.is_empty() {
            self.set_timer(Some(IOPUB_HOLD));
        }
        state.held.push(frames);
    }

    /// Sends the held and queued messages now.
    fn release(&self) {
        let mut state = self.lock();
        if !state.held.is_empty() || !self.queue.1.is_empty() {
            self.flush(&mut state, None);
        }
    }

    fn flush(&self, state: &mut IopubState, next: Option<Vec<Vec<u8>>>) {
        let held = std::mem::take(&mut state.held);
        if !held.is_empty() {
            // Disarmed before the queue is drained: a wake-up for a message queued after the drain
            // is not cancelled.
            self.set_timer(None);
        }
        let queued: Vec<_> = self.queue.1.try_iter().collect();
        if state.socket.is_none() {
            return;
        }
        for frames in held.into_iter().chain(queued).chain(next) {
            if !self.send_one(state, frames) {
                state.socket = None;
                self.wake(); // the iopub thread must notice, and end
                return;
            }
        }
        // A send may have taken in a subscription (and consumed the ZMQ_FD wake-up the iopub
        // thread waits for): greet it here.
        if !self.welcome(state) {
            state.socket = None;
            self.wake();
        }
    }

    /// Sends one message; false on ETERM. A send that waited IOPUB_STALL_MS for a subscriber goes
    /// again without waiting (see the type's comment).
    fn send_one(&self, state: &mut IopubState, frames: Vec<Vec<u8>>) -> bool {
        let Some(socket) = state.socket.as_mut() else { return false };
        let mut sent = socket.send_multipart(&frames, zmq::DONTWAIT);
        if let Err(zmq::Error::EAGAIN) = sent {
            IopubCounts::add(&self.counts.waited);
            sent = socket.send_multipart(&frames, 0);
        }
        if let Err(zmq::Error::EAGAIN) = sent {
            let n = IopubCounts::add(&self.counts.set_aside);
            log::warn!(
                "iopub: a subscriber has left its full queue unread for {IOPUB_STALL_MS} ms: set aside until it \
                 reads again, it misses output meanwhile (the others get everything; {n} set aside so far)"
            );
            let _ = set_int_option(socket, zmq_sys::ZMQ_XPUB_NODROP, 0);
            sent = socket.send_multipart(&frames, 0);
            let _ = set_int_option(socket, zmq_sys::ZMQ_XPUB_NODROP, 1);
        }
        match sent {
            Ok(()) => {
                IopubCounts::add(&self.counts.sent);
                self.output.add(frames.iter().map(Vec::len).sum());
                true
            }
            Err(zmq::Error::ETERM) => false,
            Err(e) => {
                let n = IopubCounts::add(&self.counts.dropped);
                log::warn!("iopub: a message could not be sent ({e}); dropped ({n} dropped so far)");
                true
            }
        }
    }

    /// Greets pending subscriptions; false once the context has terminated (the socket is closed).
    fn greet_subscribers(&self) -> bool {
        let mut state = self.lock();
        if state.socket.is_none() {
            return false;
        }
        if self.welcome(&mut state) {
            return true;
        }
        state.socket = None;
        false
    }

    /// Answers every subscription waiting on the socket with `iopub_welcome`; false on ETERM.
    fn welcome(&self, state: &mut IopubState) -> bool {
        loop {
            let Some(socket) = state.socket.as_mut() else { return false };
            match socket.get_events() {
                Ok(events) if events.contains(zmq::POLLIN) => {}
                Ok(_) => return true,
                Err(zmq::Error::ETERM) => return false,
                Err(_) => return true,
            }
            match socket.recv_bytes(zmq::DONTWAIT) {
                // A subscription is [1, topic...]; unsubscriptions ([0, ...]) need nothing.
                Ok(sub) if sub.first() == Some(&1) => {
                    let topic = String::from_utf8_lossy(&sub[1..]).into_owned();
                    let mut msg = Message {
                        header: wire::header("iopub_welcome", &self.session),
                        parent_header: json!({}),
                        metadata: json!({}),
                        content: json!({ "subscription": topic }),
                        ..Message::default()
                    };
                    msg.identities = vec![sub[1..].to_vec()];
                    if !self.send_one(state, wire::encode(&msg, &self.signer)) {
                        return false;
                    }
                }
                Ok(unsub) if unsub.first() == Some(&0) => self.output.subscriber_left(),
                Ok(_) => {}
                Err(zmq::Error::ETERM) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Publishes on iopub: signs, and prefixes the msg_type as the topic.
#[derive(Clone)]
pub(super) struct Publisher {
    pub(super) iopub: Arc<IopubSocket>,
    /// Never wait for the socket (the control thread's publisher): see IopubSocket::send_nowait.
    never_wait: bool,
}

impl Publisher {
    pub(super) fn new(iopub: IopubSocket) -> Publisher {
        Publisher { iopub: Arc::new(iopub), never_wait: false }
    }

    /// A publisher for a thread that must never wait for a subscriber.
    pub(super) fn never_waiting(&self) -> Publisher {
        Publisher { iopub: self.iopub.clone(), never_wait: true }
    }

    pub(super) fn signer(&self) -> &Signer {
        &self.iopub.signer
    }

    pub(super) fn session(&self) -> &str {
        &self.iopub.session
    }

    fn encode(&self, parent: &Message, msg_type: &str, content: Value) -> Vec<Vec<u8>> {
        let topic = vec![msg_type.as_bytes().to_vec()];
        wire::encode_child(parent, msg_type, self.session(), &content, topic, self.signer())
    }

    pub(super) fn publish(&self, parent: &Message, msg_type: &str, content: Value) {
        let frames = self.encode(parent, msg_type, content);
        if self.never_wait {
            self.iopub.send_nowait(frames);
        } else {
            self.iopub.send(frames);
        }
    }

    /// Publishes, but lets the message wait for the next one (at most IOPUB_HOLD).
    pub(super) fn publish_held(&self, parent: &Message, msg_type: &str, content: Value) {
        self.iopub.hold(self.encode(parent, msg_type, content));
    }

    /// Sends what is held now: before a reply, or before the kernel may block.
    pub(super) fn release(&self) {
        self.iopub.release();
    }

    pub(super) fn status(&self, parent: &Message, state: &str) {
        self.publish(parent, "status", json!({ "execution_state": state }));
    }

    /// The iopub counters, for kernel_info and the log.
    pub(super) fn counts(&self) -> Value {
        self.iopub.counts.to_json()
    }
}
