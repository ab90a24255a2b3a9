//! `llmspell lsp`: a Language Server Protocol 3.17 server on stdio, a thin adapter over `analysis`.
//!
//! Threads: a reader frames stdin (`transport`) and hands messages over a channel; the main thread
//! owns the documents and answers every request itself, in order, from the analysis (`handlers`);
//! `live` fetches the running session's names in the background, and a one-off thread scans the
//! workspace's files. Nothing the main thread does waits for a kernel.

mod documents;
mod handlers;
pub mod jupyter_lsp;
pub mod live;
mod transport;
mod workspace;

use crossbeam_channel::{unbounded, Sender};
use documents::{Documents, Encoding};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use transport::Incoming;
use workspace::Workspace;

/// What the main thread waits for.
enum Event {
    Client(Incoming),
    /// The live snapshot changed: diagnostics are published again.
    LiveChanged,
    /// The workspace scan finished: the globals each file assigns.
    Scanned(HashMap<PathBuf, HashSet<String>>),
}

/// JSON-RPC and LSP error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const SERVER_NOT_INITIALIZED: i64 = -32002;

/// The server's state between messages.
struct Server<W: Write> {
    out: W,
    docs: Documents,
    workspace: Workspace,
    enc: Encoding,
    live: Option<live::Live>,
    live_target: live::Target,
    events: Sender<Event>,
    initialized: bool,
    shutdown: bool,
    /// Open documents whose diagnostics are to be published again.
    stale: HashSet<String>,
}

/// Serves LSP on stdin/stdout until `exit` (or stdin's end); the process's exit code.
pub fn serve(target: live::Target) -> u8 {
    let (events, incoming) = unbounded();
    let reader = events.clone();
    let spawned = std::thread::Builder::new().name("lsp-reader".into()).spawn(move || {
        let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
        loop {
            let got = transport::read(&mut input);
            let end = matches!(got, Incoming::End);
            if reader.send(Event::Client(got)).is_err() || end {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        eprintln!("llmspell lsp: cannot start: {e}");
        return 1;
    }
    let mut server = Server {
        out: std::io::stdout().lock(),
        docs: Documents::default(),
        workspace: Workspace::new(None),
        enc: Encoding::Utf16,
        live: None,
        live_target: target,
        events,
        initialized: false,
        shutdown: false,
        stale: HashSet::new(),
    };
    while let Ok(event) = incoming.recv() {
        match event {
            Event::Client(Incoming::Message(m)) => {
                if let Some(code) = server.message(m) {
                    return code;
                }
            }
            Event::Client(Incoming::Malformed(why)) => {
                log::warn!("lsp: a malformed message: {why}");
                server.send(
                    json!({ "jsonrpc": "2.0", "id": null, "error": { "code": PARSE_ERROR, "message": why } }),
                );
            }
            // The editor has gone: end as `exit` without `shutdown` does.
            Event::Client(Incoming::End) => return if server.shutdown { 0 } else { 1 },
            Event::LiveChanged => server.publish_all(),
            Event::Scanned(globals) => {
                server.workspace.globals.extend(globals);
                server.refresh_open_globals();
                server.publish_all();
            }
        }
        if incoming.is_empty() {
            server.publish_stale();
        }
    }
    1
}

impl<W: Write> Server<W> {
    fn send(&mut self, message: Value) {
        if let Err(e) = transport::write(&mut self.out, &message) {
            log::warn!("lsp: cannot write to the editor: {e}");
        }
    }

    /// One message from the client; Some(exit code) when it asks to end.
    fn message(&mut self, m: Value) -> Option<u8> {
        let method = m["method"].as_str().unwrap_or("").to_string();
        let params = m.get("params").cloned().unwrap_or(Value::Null);
        let Some(id) = m.get("id").cloned() else {
            if method == "exit" {
                return Some(if self.shutdown { 0 } else { 1 });
            }
            if self.initialized && !self.shutdown {
                self.notification(&method, &params);
            }
            return None;
        };
        if method.is_empty() {
            if m.get("result").is_none() && m.get("error").is_none() {
                self.error(id, INVALID_REQUEST, "a request needs a method".into());
            }
            return None; // a response to something we asked: nothing is asked, nothing expected
        }
        let answer = match (method.as_str(), self.initialized, self.shutdown) {
            ("initialize", false, _) => Ok(self.initialize(&params)),
            ("initialize", true, _) => Err((INVALID_REQUEST, "initialize was already received".into())),
            (_, false, _) => Err((SERVER_NOT_INITIALIZED, "the server is not initialized yet".into())),
            ("shutdown", _, _) => {
                self.shutdown = true;
                Ok(Value::Null)
            }
            (_, _, true) => Err((INVALID_REQUEST, "the server is shutting down".into())),
            _ => self.request(&method, &params),
        };
        match answer {
            Ok(result) => self.send(json!({ "jsonrpc": "2.0", "id": id, "result": result })),
            Err((code, message)) => self.error(id, code, message),
        }
        None
    }

    fn error(&mut self, id: Value, code: i64, message: String) {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }));
    }

    /// `initialize`: the encoding, the workspace root, and what we can do.
    fn initialize(&mut self, params: &Value) -> Value {
        let offered = &params["capabilities"]["general"]["positionEncodings"];
        let utf8 = offered.as_array().is_some_and(|a| a.iter().any(|e| e == "utf-8"));
        self.enc = if utf8 { Encoding::Utf8 } else { Encoding::Utf16 };
        let root = params["workspaceFolders"][0]["uri"]
            .as_str()
            .or(params["rootUri"].as_str())
            .and_then(workspace::path_of)
            .or_else(|| params["rootPath"].as_str().map(PathBuf::from))
            .map(|r| workspace::real_path(&r));
        log::debug!("lsp: initialize, workspace root {root:?}");
        self.workspace = Workspace::new(root.clone());
        if let Some(root) = root {
            let events = self.events.clone();
            let _ = std::thread::Builder::new().name("lsp-scan".into()).spawn(move || {
                let _ = events.send(Event::Scanned(workspace::scan_globals(&root)));
            });
        }
        let events = self.events.clone();
        self.live = Some(live::Live::start(self.live_target.clone(), move || {
            let _ = events.send(Event::LiveChanged);
        }));
        self.initialized = true;
        json!({
            "capabilities": {
                "positionEncoding": if utf8 { "utf-8" } else { "utf-16" },
                "textDocumentSync": { "openClose": true, "change": 2 },
                "completionProvider": { "triggerCharacters": [".", ":", "\"", "'"] },
                "hoverProvider": true,
                "signatureHelpProvider": { "triggerCharacters": ["(", ","] },
                "definitionProvider": true,
                "referencesProvider": true,
                "renameProvider": { "prepareProvider": false },
                "documentSymbolProvider": true,
                "workspaceSymbolProvider": true,
            },
            "serverInfo": { "name": "llmspell", "version": env!("CARGO_PKG_VERSION") },
        })
    }
}
