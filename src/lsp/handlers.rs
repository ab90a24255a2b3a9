//! The LSP methods, each a conversion between LSP's JSON (URIs, line/column positions) and the
//! analysis' calls (byte offsets), plus diagnostics: the analysis' own and Lua's syntax verdict.

use super::documents::{Document, Encoding};
use super::workspace::{self, View};
use super::{Server, INVALID_PARAMS, METHOD_NOT_FOUND};
use crate::analysis::{self, CompletionKind, Severity, SymbolKind};
use serde_json::{json, Value};
use std::io::Write;
use std::ops::Range;

/// LSP's "request failed" code (the request was valid, the answer is no).
const REQUEST_FAILED: i64 = -32803;

type Answer = Result<Value, (i64, String)>;

impl<W: Write> Server<W> {
    pub(super) fn notification(&mut self, method: &str, params: &Value) {
        let uri = params["textDocument"]["uri"].as_str().unwrap_or("").to_string();
        match method {
            "textDocument/didOpen" => {
                let text = params["textDocument"]["text"].as_str().unwrap_or("");
                let version = params["textDocument"]["version"].as_i64().unwrap_or(0);
                self.docs.open.insert(uri.clone(), Document::new(text, version));
            }
            "textDocument/didChange" => {
                let enc = self.enc;
                let Some(doc) = self.docs.open.get_mut(&uri) else { return };
                let changes = params["contentChanges"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let version = params["textDocument"]["version"].as_i64().unwrap_or(doc.version + 1);
                doc.apply(changes, version, enc);
            }
            "textDocument/didClose" => {
                self.docs.open.remove(&uri);
                // What is not open is not shown: its diagnostics go with it.
                self.send(publish_message(&uri, None, Vec::new()));
                return;
            }
            _ => return, // initialized, didSave, $/cancelRequest, ...: nothing to do
        }
        self.refresh_globals_of(&uri);
        // Published once the messages already waiting are read: a burst of keystrokes is one run.
        self.stale.insert(uri);
    }

    /// Publishes the diagnostics of the documents changed since the last time.
    pub(super) fn publish_stale(&mut self) {
        for uri in std::mem::take(&mut self.stale) {
            self.publish(&uri);
        }
    }

    /// The open document's globals count as the workspace's (its text, not the file on disk).
    fn refresh_globals_of(&mut self, uri: &str) {
        let (Some(doc), Some(path)) = (self.docs.open.get(uri), workspace::path_of(uri)) else { return };
        let in_root = self.workspace.root.as_ref().is_some_and(|r| path.starts_with(r));
        if in_root {
            self.workspace.globals.insert(path, doc.file.defined_globals().into_iter().collect());
        }
    }

    pub(super) fn refresh_open_globals(&mut self) {
        let uris: Vec<String> = self.docs.open.keys().cloned().collect();
        for uri in uris {
            self.refresh_globals_of(&uri);
        }
    }

    pub(super) fn publish_all(&mut self) {
        self.stale.extend(self.docs.open.keys().cloned());
    }

    fn view(&self, uri: &str) -> View<'_> {
        View {
            workspace: &self.workspace,
            docs: &self.docs,
            current: workspace::path_of(uri),
            live: self.live.as_ref().and_then(|l| l.current()),
        }
    }

    fn publish(&mut self, uri: &str) {
        let Some(doc) = self.docs.open.get(uri) else { return };
        let found = diagnostics(doc, &self.view(uri), self.enc);
        let message = publish_message(uri, Some(doc.version), found);
        self.send(message);
    }

    pub(super) fn request(&mut self, method: &str, params: &Value) -> Answer {
        if method == "workspace/symbol" {
            return Ok(self.workspace_symbols(params["query"].as_str().unwrap_or("")));
        }
        let uri = params["textDocument"]["uri"].as_str().unwrap_or("");
        log::debug!("lsp: {method} {uri}");
        let known = matches!(
            method,
            "textDocument/completion"
                | "textDocument/hover"
                | "textDocument/signatureHelp"
                | "textDocument/definition"
                | "textDocument/references"
                | "textDocument/rename"
                | "textDocument/documentSymbol"
        );
        if !known {
            return Err((METHOD_NOT_FOUND, format!("llmspell lsp does not handle {method:?}")));
        }
        // A document the editor never opened is read from disk; one that cannot be read gets an
        // empty answer.
        let read;
        let doc = match self.docs.open.get(uri) {
            Some(d) => d,
            None => match workspace::path_of(uri).and_then(|p| workspace::read_bounded(&p)) {
                Some(text) => {
                    read = Document::new(&text, 0);
                    &read
                }
                None => return Ok(empty_answer(method)),
            },
        };
        let offset = doc.offset(&params["position"], self.enc);
        let (enc, view) = (self.enc, self.view(uri));
        let file = &doc.file;
        Ok(match method {
            "textDocument/completion" => completion(doc, &analysis::complete(file, offset, &view), enc),
            "textDocument/hover" => match analysis::hover(file, offset, &view) {
                Some(h) => json!({
                    "contents": { "kind": "markdown", "value": h.markdown },
                    "range": doc.range(&h.range, enc),
                }),
                None => Value::Null,
            },
            "textDocument/signatureHelp" => {
                signature_help(analysis::signature_help(file, offset, &view), enc)
            }
            "textDocument/definition" => {
                let found = analysis::definition(file, offset, &view);
                Value::Array(found.iter().filter_map(|l| self.location(uri, doc, l)).collect())
            }
            "textDocument/references" => Value::Array(
                analysis::references(file, offset)
                    .iter()
                    .map(|r| json!({ "uri": uri, "range": doc.range(r, enc) }))
                    .collect(),
            ),
            "textDocument/rename" => return rename(uri, doc, offset, params["newName"].as_str(), enc),
            _ => Value::Array(analysis::symbols(file).iter().map(|s| document_symbol(doc, s, enc)).collect()),
        })
    }

    /// A definition's place as an LSP Location (in this document, or in a module on disk or open).
    fn location(&self, uri: &str, doc: &Document, l: &analysis::Location) -> Option<Value> {
        let Some(path) = &l.path else {
            return Some(json!({ "uri": uri, "range": doc.range(&l.range, self.enc) }));
        };
        let target_uri = workspace::uri_of(path);
        let range = match self.docs.open.get(&target_uri) {
            Some(d) => d.range(&l.range, self.enc),
            None => Document::new(&workspace::read_bounded(path)?, 0).range(&l.range, self.enc),
        };
        Some(json!({ "uri": target_uri, "range": range }))
    }

    /// Symbols of the open documents whose name contains the query (any case).
    fn workspace_symbols(&self, query: &str) -> Value {
        let query = query.to_lowercase();
        let mut out = Vec::new();
        for (uri, doc) in &self.docs.open {
            let mut stack: Vec<&analysis::Symbol> = Vec::new();
            let symbols = analysis::symbols(&doc.file);
            stack.extend(symbols.iter());
            while let Some(s) = stack.pop() {
                if s.name.to_lowercase().contains(&query) {
                    let location = json!({ "uri": uri, "range": doc.range(&s.selection, self.enc) });
                    out.push(json!({ "name": s.name, "kind": symbol_kind(s.kind), "location": location }));
                }
                stack.extend(s.children.iter());
            }
        }
        Value::Array(out)
    }
}

fn empty_answer(method: &str) -> Value {
    match method {
        "textDocument/completion" => json!({ "isIncomplete": false, "items": [] }),
        "textDocument/hover" | "textDocument/signatureHelp" | "textDocument/rename" => Value::Null,
        _ => json!([]),
    }
}

fn publish_message(uri: &str, version: Option<i64>, diagnostics: Vec<Value>) -> Value {
    let mut params = json!({ "uri": uri, "diagnostics": diagnostics });
    if let Some(v) = version {
        params["version"] = json!(v);
    }
    json!({ "jsonrpc": "2.0", "method": "textDocument/publishDiagnostics", "params": params })
}

/// The analysis' diagnostics, and Lua's own message for the first syntax error, placed where the
/// analysis' parser met it when that is on Lua's line, else at the `near 'token'` Lua names.
fn diagnostics(doc: &Document, view: &View, enc: Encoding) -> Vec<Value> {
    let mut out = Vec::new();
    let syntax = crate::lua::syntax::check(doc.text());
    for d in analysis::diagnostics(&doc.file, view) {
        let severity = match d.severity {
            Severity::Error => 1,
            Severity::Warning => 2,
            Severity::Hint => 4,
        };
        out.push(json!({
            "range": doc.range(&d.range, enc), "severity": severity, "code": d.code,
            "source": "llmspell", "message": d.message,
        }));
    }
    if let Some((line, message)) = syntax {
        let range = syntax_error_range(doc, line.saturating_sub(1), &message);
        out.insert(
            0,
            json!({
                "range": doc.range(&range, enc), "severity": 1, "code": "syntax",
                "source": "lua", "message": message,
            }),
        );
    }
    out
}

/// Where on line `line` (0-based) Lua's syntax error belongs.
fn syntax_error_range(doc: &Document, line: usize, message: &str) -> Range<usize> {
    let text = doc.text();
    if message.ends_with("near <eof>") {
        return text.len()..text.len();
    }
    let Some(line_range) = doc.line_range(line) else { return text.len()..text.len() };
    if let Some(r) = doc.file.first_syntax_error() {
        if line_range.contains(&r.start) || r.start == line_range.end {
            return r.start..r.end.max(r.start);
        }
    }
    let token = message.rsplit_once("near '").and_then(|(_, t)| t.strip_suffix('\''));
    let line_text = &text[line_range.clone()];
    match token.and_then(|t| line_text.find(t).map(|at| (at, t.len()))) {
        Some((at, len)) => line_range.start + at..line_range.start + at + len,
        None => line_range,
    }
}

fn completion(doc: &Document, items: &[analysis::Completion], enc: Encoding) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|c| {
            let kind = match c.kind {
                CompletionKind::Method => 2,
                CompletionKind::Function => 3,
                CompletionKind::Field => 5,
                CompletionKind::Variable => 6,
                CompletionKind::Module => 9,
                CompletionKind::Keyword => 14,
                CompletionKind::Constant => 21,
            };
            let mut item = json!({
                "label": c.label, "kind": kind,
                "textEdit": { "range": doc.range(&c.replace, enc), "newText": c.label },
            });
            if let Some(d) = &c.detail {
                item["detail"] = json!(d);
            }
            if let Some(d) = &c.documentation {
                item["documentation"] = json!({ "kind": "markdown", "value": d });
            }
            item
        })
        .collect();
    json!({ "isIncomplete": false, "items": items })
}

fn signature_help(help: Option<analysis::SignatureHelp>, enc: Encoding) -> Value {
    let Some(h) = help else { return Value::Null };
    // Parameter labels as [start, end) offsets in the label, counted in the client's units.
    let units = |byte: usize| match enc {
        Encoding::Utf16 => h.label.get(..byte).map_or(0, |s| s.encode_utf16().count()),
        Encoding::Utf8 => byte,
    };
    let params: Vec<Value> =
        h.params.iter().map(|r| json!({ "label": [units(r.start), units(r.end)] })).collect();
    let mut signature = json!({ "label": h.label, "parameters": params });
    if let Some(d) = &h.documentation {
        signature["documentation"] = json!({ "kind": "markdown", "value": d });
    }
    json!({ "signatures": [signature], "activeSignature": 0, "activeParameter": h.active_param })
}

fn rename(uri: &str, doc: &Document, offset: usize, new_name: Option<&str>, enc: Encoding) -> Answer {
    let Some(name) = new_name.filter(|n| is_lua_name(n)) else {
        return Err((INVALID_PARAMS, format!("{:?} is not a Lua name", new_name.unwrap_or(""))));
    };
    let Some(ranges) = analysis::rename(&doc.file, offset) else {
        return Err((
            REQUEST_FAILED,
            "only a local variable, parameter or local function can be renamed".into(),
        ));
    };
    let edits: Vec<Value> =
        ranges.iter().map(|r| json!({ "range": doc.range(r, enc), "newText": name })).collect();
    Ok(json!({ "changes": { uri: edits } }))
}

fn is_lua_name(n: &str) -> bool {
    const KEYWORDS: [&str; 22] = [
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
        "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&n)
}

fn symbol_kind(k: SymbolKind) -> u8 {
    match k {
        SymbolKind::Module => 2,
        SymbolKind::Method => 6,
        SymbolKind::Field => 8,
        SymbolKind::Function => 12,
        SymbolKind::Variable => 13,
    }
}

fn document_symbol(doc: &Document, s: &analysis::Symbol, enc: Encoding) -> Value {
    let children: Vec<Value> = s.children.iter().map(|c| document_symbol(doc, c, enc)).collect();
    json!({
        "name": s.name, "kind": symbol_kind(s.kind),
        "range": doc.range(&s.range, enc), "selectionRange": doc.range(&s.selection, enc),
        "children": children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(text: &str) -> (String, &str) {
        let doc = Document::new(text, 1);
        let (line, message) = crate::lua::syntax::check(text).expect("a syntax error");
        let r = syntax_error_range(&doc, line - 1, &message);
        (message, &text[r])
    }

    #[test]
    fn lua_syntax_errors_are_placed_at_the_token_lua_names() {
        assert_eq!(placed("local x = 1\nlocal = 2\n"), ("<name> expected near '='".into(), "="));
        let (msg, at) = placed("print('a' 'b' 'c')\n");
        assert!(msg.ends_with("near ''b''"), "{msg}");
        assert_eq!(at, "'b'");
        // At the end: an empty range at the end of the text, as Lua's line says.
        let (msg, at) = placed("function f()\n");
        assert!(msg.ends_with("near <eof>"), "{msg}");
        assert_eq!(at, "");
    }

    #[test]
    fn only_lua_names_are_new_names() {
        assert!(is_lua_name("_x1") && is_lua_name("surface"));
        assert!(!is_lua_name("end") && !is_lua_name("1x") && !is_lua_name("a-b") && !is_lua_name(""));
    }
}
