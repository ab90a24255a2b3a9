//! The live session's names, for answers no other Lua language server has. A thread of its own finds
//! the user's running kernel (never starting one), asks it on control for its last snapshot
//! (`llmspell_snapshot_request`, answered at once even while a cell runs) and keeps the newest here.
//! Requests read what is kept and never wait: at worst they see what the session last knew.

use crate::analysis::LiveSnapshot;
use crate::client::remote::{RemoteClient, RemoteOptions};
use crate::client::{Client, ClientError};
use crate::connection::{self, KernelFiles};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which kernel's session to follow.
#[derive(Clone)]
pub enum Target {
    /// Our own kernel by id (`--kernel`, default "default"), if it runs.
    Local(String),
    /// The kernel of a Jupyter connection file (`--connect`).
    ConnectionFile(PathBuf),
    /// A kernel by name on a Jupyter Server (`--remote`).
    Remote(RemoteOptions, String),
}

/// Fetches at most this often while requests come in.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Looks again this often when nothing asks (a kernel started, a cell run from a terminal).
const RECHECK: Duration = Duration::from_secs(5);
/// How long one snapshot request may take before the connection is given up.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub struct Live {
    latest: Arc<Mutex<Option<Arc<LiveSnapshot>>>>,
    wake: Sender<()>,
}

impl Live {
    /// Starts the fetcher; `changed` is called (on its thread) each time the snapshot changes.
    pub fn start(target: Target, changed: impl Fn() + Send + 'static) -> Live {
        let latest = Arc::new(Mutex::new(None));
        let (wake, woken) = bounded(1);
        let kept = latest.clone();
        let spawned = std::thread::Builder::new()
            .name("lsp-live".into())
            .spawn(move || Fetcher { target, conn: None, kept, changed: Box::new(changed) }.run(&woken));
        if let Err(e) = spawned {
            log::warn!("lsp: no live session names: cannot start a thread: {e}");
        }
        Live { latest, wake }
    }

    /// The newest snapshot, if a session is known; asks the fetcher to look again (it decides when).
    pub fn current(&self) -> Option<Arc<LiveSnapshot>> {
        let _ = self.wake.try_send(());
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A connection that can ask for a snapshot.
enum Connection {
    Local(Client),
    Remote(RemoteClient),
}

impl Connection {
    fn ask(&self, since: Option<u64>) -> Result<Value, ClientError> {
        let content = json!({ "since": since });
        match self {
            Connection::Local(c) => c.control_request("llmspell_snapshot_request", content, ANSWER_WITHIN),
            Connection::Remote(r) => r.control_request("llmspell_snapshot_request", content, ANSWER_WITHIN),
        }
    }
}

struct Fetcher {
    target: Target,
    conn: Option<Connection>,
    kept: Arc<Mutex<Option<Arc<LiveSnapshot>>>>,
    changed: Box<dyn Fn() + Send>,
}

impl Fetcher {
    fn run(mut self, woken: &Receiver<()>) {
        loop {
            let started = Instant::now();
            self.fetch();
            // At most one fetch a second however many requests ask; a slow look when none do.
            if let Some(rest) = MIN_INTERVAL.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
            match woken.recv_timeout(RECHECK) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn fetch(&mut self) {
        if self.conn.is_none() {
            self.conn = self.connect();
            if self.conn.is_none() {
                self.keep(None);
                return;
            }
        }
        let since = self.kept.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| s.generation);
        let answer = self.conn.as_ref().map(|c| c.ask(since));
        match answer {
            Some(Ok(reply)) if reply["unchanged"] == true => {}
            Some(Ok(reply)) => match serde_json::from_value::<LiveSnapshot>(reply["snapshot"].clone()) {
                Ok(snapshot) => self.keep(Some(Arc::new(snapshot))),
                // An older kernel answers "UnsupportedRequest": no live names from it.
                Err(_) => log::debug!("lsp: the kernel has no snapshot: {reply}"),
            },
            Some(Err(e)) => {
                log::info!("lsp: the session's kernel does not answer ({e}); looking for it again");
                self.conn = None;
                self.keep(None);
            }
            None => {}
        }
    }

    /// The running kernel of the target, if there is one; never starts one.
    fn connect(&self) -> Option<Connection> {
        match &self.target {
            Target::Local(id) => {
                // No kernels directory: nothing runs (and looking must not create the home).
                let dir = connection::kernels_dir_to_look_in();
                let files = dir.is_dir().then(|| KernelFiles::new(&dir, id)).filter(|f| f.is_alive())?;
                local(&files.connection)
            }
            Target::ConnectionFile(path) => local(path),
            Target::Remote(opts, name) => match RemoteClient::attach(opts, name) {
                Ok(c) => c.map(Connection::Remote),
                Err(e) => {
                    log::info!("lsp: remote kernel {name}: {e}");
                    None
                }
            },
        }
    }

    fn keep(&self, snapshot: Option<Arc<LiveSnapshot>>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let same = match (&*kept, &snapshot) {
            (None, None) => true,
            (Some(a), Some(b)) => a.generation == b.generation,
            _ => false,
        };
        *kept = snapshot;
        drop(kept);
        if !same {
            (self.changed)();
        }
    }
}

fn local(path: &std::path::Path) -> Option<Connection> {
    let c = Client::connect_file(path, ANSWER_WITHIN).ok()?;
    c.stop_listening();
    Some(Connection::Local(c))
}
