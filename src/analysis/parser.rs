//! Recursive-descent parser for Lua 5.4 statements that resolves names while it parses (like Lua's
//! own single-pass compiler), so a use before a `local` is a global and `local x = x` reads the outer
//! x. Errors are recorded (the first one is kept) and parsing goes on; nesting deeper than
//! `MAX_DEPTH` is an error, which bounds the stack on any input.

use super::lexer::{lex, Comment, Kw, Tok, Token};
use super::model::{Access, Function, Local, LocalId, LocalKind, Model, NameUse, Target, TopItem, Value};
use std::collections::HashMap;
use std::ops::Range;

/// Like Lua's LUAI_MAXCCALLS: nested blocks, expressions and calls beyond this are a syntax error.
const MAX_DEPTH: usize = 200;

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) toks: Vec<Token>,
    comments: Vec<Comment>,
    pub(super) pos: usize,
    pub(super) m: Model,
    /// Locals in scope, innermost last.
    active: Vec<LocalId>,
    /// The same locals by name (innermost last), so lookups do not scan every local in scope.
    by_name: HashMap<String, Vec<LocalId>>,
    /// For each open function, the `local function` being defined there (its own name's uses
    /// inside do not count as uses).
    recursive: Vec<Option<LocalId>>,
    pub(super) depth: usize,
    /// Uses whose local is the one being defined (by index into `m.uses`).
    pub(super) self_refs: Vec<usize>,
}

pub fn parse(text: &str) -> (Model, Vec<usize>) {
    let lexed = lex(text);
    let mut p = Parser {
        text,
        toks: lexed.tokens,
        comments: lexed.comments,
        pos: 0,
        m: Model::default(),
        active: Vec::new(),
        by_name: HashMap::new(),
        recursive: vec![None],
        depth: 0,
        self_refs: Vec::new(),
    };
    if let Some((s, e)) = lexed.error {
        p.m.first_error = Some(s as usize..e as usize);
    }
    p.chunk();
    p.m.comments = p.comments.iter().map(|c| c.start as usize..c.end as usize).collect();
    let strings = p.toks.iter().filter(|t| {
        t.tok == Tok::Str
            || (t.tok == Tok::Error && matches!(text.as_bytes()[t.start as usize], b'"' | b'\'' | b'['))
    });
    p.m.strings = strings.map(|t| t.start as usize..t.end as usize).collect();
    (p.m, p.self_refs)
}

impl<'a> Parser<'a> {
    // ----- token helpers -----
    pub(super) fn tok(&self) -> Tok {
        self.toks[self.pos].tok
    }
    pub(super) fn peek(&self, k: usize) -> Tok {
        self.toks[(self.pos + k).min(self.toks.len() - 1)].tok
    }
    pub(super) fn range(&self) -> Range<usize> {
        let t = self.toks[self.pos];
        t.start as usize..t.end as usize
    }
    pub(super) fn start(&self) -> usize {
        self.toks[self.pos].start as usize
    }
    /// End of the previous token.
    pub(super) fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].end as usize
        }
    }
    pub(super) fn slice(&self) -> &'a str {
        let r = self.range();
        &self.text[r]
    }
    pub(super) fn advance(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }
    pub(super) fn is_op(&self, op: &str) -> bool {
        matches!(self.tok(), Tok::Op(o) if o == op)
    }
    pub(super) fn is_kw(&self, kw: Kw) -> bool {
        self.tok() == Tok::Keyword(kw)
    }
    pub(super) fn eat_op(&mut self, op: &str) -> bool {
        let yes = self.is_op(op);
        if yes {
            self.advance();
        }
        yes
    }
    pub(super) fn eat_kw(&mut self, kw: Kw) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.advance();
        }
        yes
    }
    pub(super) fn expect_op(&mut self, op: &str) {
        if !self.eat_op(op) {
            self.error();
        }
    }
    pub(super) fn expect_kw(&mut self, kw: Kw) {
        if !self.eat_kw(kw) {
            self.error();
        }
    }
    /// Records a syntax error at the current token (only the first one is kept).
    pub(super) fn error(&mut self) {
        if self.m.first_error.is_none() {
            self.m.first_error = Some(self.range());
        }
    }
    /// A name token's text and range, or an error.
    pub(super) fn expect_name(&mut self) -> Option<(&'a str, Range<usize>)> {
        if self.tok() == Tok::Name {
            let r = self.range();
            let s = self.slice();
            self.advance();
            Some((s, r))
        } else {
            self.error();
            None
        }
    }
    /// Enters one nesting level; false (and an error) when too deep.
    pub(super) fn enter(&mut self) -> bool {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.error();
            return false;
        }
        true
    }
    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    // ----- scopes -----
    pub(super) fn declare(
        &mut self,
        name: &str,
        decl: Range<usize>,
        kind: LocalKind,
        value: Value,
    ) -> LocalId {
        let id = self.m.locals.len();
        self.m.locals.push(Local {
            name: name.to_string(),
            decl: decl.clone(),
            kind,
            attrib: None,
            visible: decl.end..self.text.len(),
            value,
            reads: 0,
            writes: 0,
            mutations: 0,
            empty: false,
            fn_assign: None,
            secondary: false,
        });
        self.m.uses.push(NameUse { range: decl, target: Target::Local(id), access: Access::Decl });
        id
    }
    pub(super) fn activate(&mut self, id: LocalId, from: usize) {
        self.m.locals[id].visible.start = from;
        self.active.push(id);
        self.by_name.entry(self.m.locals[id].name.clone()).or_default().push(id);
    }
    /// Closes the scope opened when `active` had `mark` entries; its locals stop being visible at `end`.
    pub(super) fn close_scope(&mut self, mark: usize, end: usize) {
        for id in self.active.drain(mark..) {
            self.m.locals[id].visible.end = end;
            if let Some(ids) = self.by_name.get_mut(&self.m.locals[id].name) {
                ids.pop();
            }
        }
    }
    pub(super) fn scope_mark(&self) -> usize {
        self.active.len()
    }
    /// Records a use of `name` at `range`, resolved against the locals in scope.
    pub(super) fn use_name(&mut self, name: &str, range: Range<usize>) -> (Target, usize) {
        let found = self.by_name.get(name).and_then(|ids| ids.last().copied());
        let target = match found {
            Some(id) => Target::Local(id),
            None => Target::Global(name.to_string()),
        };
        let idx = self.m.uses.len();
        if found.is_some() && self.recursive.contains(&found) {
            self.self_refs.push(idx);
        }
        self.m.uses.push(NameUse { range, target: target.clone(), access: Access::Read });
        (target, idx)
    }

    // ----- blocks and statements -----
    fn chunk(&mut self) {
        let mark = self.scope_mark();
        loop {
            self.block_body();
            if self.tok() == Tok::Eof {
                break;
            }
            // A stray `end`, `until`, `else` at top level.
            self.error();
            self.advance();
        }
        self.close_scope(mark, self.text.len());
    }

    /// Statements until a block end (`end`, `else`, `elseif`, `until`, end of text). No scope.
    fn block_body(&mut self) {
        loop {
            match self.tok() {
                Tok::Eof | Tok::Keyword(Kw::End | Kw::Else | Kw::Elseif | Kw::Until) => return,
                Tok::Keyword(Kw::Return) => {
                    self.return_stat();
                    continue;
                }
                _ => {}
            }
            let before = self.pos;
            self.statement();
            if self.pos == before {
                self.error();
                self.advance();
            }
        }
    }

    /// A block in its own scope; locals end at the next token (the block's closing keyword).
    pub(super) fn block(&mut self) {
        if !self.enter() {
            self.leave();
            return;
        }
        let mark = self.scope_mark();
        self.block_body();
        self.close_scope(mark, self.start());
        self.leave();
    }

    fn return_stat(&mut self) {
        self.advance();
        let top = self.recursive.len() == 1 && self.depth == 0;
        let mut value = None;
        if !matches!(self.tok(), Tok::Eof | Tok::Keyword(Kw::End | Kw::Else | Kw::Elseif | Kw::Until))
            && !self.is_op(";")
        {
            let values = self.expr_list();
            value = values.into_iter().next().map(|e| e.value);
        }
        self.eat_op(";");
        if top {
            self.m.returns = value;
        }
        if !matches!(self.tok(), Tok::Eof | Tok::Keyword(Kw::End | Kw::Else | Kw::Elseif | Kw::Until)) {
            self.error();
        }
    }

    fn statement(&mut self) {
        match self.tok() {
            Tok::Op(";") => self.advance(),
            Tok::Op("::") => {
                self.advance();
                self.expect_name();
                self.expect_op("::");
            }
            Tok::Keyword(Kw::Break) => self.advance(),
            Tok::Keyword(Kw::Goto) => {
                self.advance();
                self.expect_name();
            }
            Tok::Keyword(Kw::Do) => {
                self.advance();
                self.block();
                self.expect_kw(Kw::End);
            }
            Tok::Keyword(Kw::While) => {
                self.advance();
                self.expr();
                self.expect_kw(Kw::Do);
                self.block();
                self.expect_kw(Kw::End);
            }
            Tok::Keyword(Kw::Repeat) => self.repeat_stat(),
            Tok::Keyword(Kw::If) => self.if_stat(),
            Tok::Keyword(Kw::For) => self.for_stat(),
            Tok::Keyword(Kw::Function) => self.function_stat(),
            Tok::Keyword(Kw::Local) => {
                self.advance();
                if self.eat_kw(Kw::Function) {
                    self.local_function();
                } else {
                    self.local_stat();
                }
            }
            _ => self.expr_stat(),
        }
    }

    fn repeat_stat(&mut self) {
        self.advance();
        if !self.enter() {
            self.leave();
            return;
        }
        let mark = self.scope_mark();
        self.block_body();
        self.expect_kw(Kw::Until);
        self.expr();
        self.close_scope(mark, self.prev_end());
        self.leave();
    }

    fn if_stat(&mut self) {
        self.advance();
        self.expr();
        self.expect_kw(Kw::Then);
        self.block();
        loop {
            if self.eat_kw(Kw::Elseif) {
                self.expr();
                self.expect_kw(Kw::Then);
                self.block();
            } else if self.eat_kw(Kw::Else) {
                self.block();
            } else {
                break;
            }
        }
        self.expect_kw(Kw::End);
    }

    fn for_stat(&mut self) {
        self.advance();
        let mut names = Vec::new();
        while let Some((n, r)) = self.expect_name() {
            names.push((n, r));
            if !self.eat_op(",") {
                break;
            }
        }
        if names.len() == 1 && self.eat_op("=") {
            self.expr();
            self.expect_op(",");
            self.expr();
            if self.eat_op(",") {
                self.expr();
            }
        } else {
            self.expect_kw(Kw::In);
            self.expr_list();
        }
        self.expect_kw(Kw::Do);
        let mark = self.scope_mark();
        let from = self.prev_end();
        for (n, r) in names {
            let id = self.declare(n, r, LocalKind::ForVar, Value::Unknown);
            self.activate(id, from);
        }
        self.block();
        self.close_scope(mark, self.start());
        self.expect_kw(Kw::End);
    }

    fn local_function(&mut self) {
        let stat_start = self.toks[self.pos.saturating_sub(2)].start as usize;
        let Some((name, r)) = self.expect_name() else { return };
        let id = self.declare(name, r.clone(), LocalKind::LocalFunction, Value::Unknown);
        self.activate(id, r.end);
        let f = self.function_body(Some(name.to_string()), r, stat_start, false, Some(id));
        self.m.locals[id].value = Value::Function(f);
        if self.depth == 0 && self.recursive.len() == 1 {
            self.m.top_level.push(TopItem::Local(id));
        }
    }

    fn local_stat(&mut self) {
        let mut names = Vec::new();
        while let Some((n, r)) = self.expect_name() {
            let mut attrib = None;
            if self.eat_op("<") {
                attrib = self.expect_name().map(|(a, _)| a.to_string());
                self.expect_op(">");
            }
            names.push((n, r, attrib));
            if !self.eat_op(",") {
                break;
            }
        }
        let values = if self.eat_op("=") { self.expr_list() } else { Vec::new() };
        let multi = values.last().is_some_and(|e| e.multi);
        let from = self.prev_end();
        let top = self.depth == 0 && self.recursive.len() == 1;
        for (i, (n, r, attrib)) in names.into_iter().enumerate() {
            let value = values.get(i).map(|e| e.value.clone()).unwrap_or_default();
            let id = self.declare(n, r, LocalKind::Local, value);
            self.m.locals[id].attrib = attrib;
            self.m.locals[id].secondary = multi && i + 1 >= values.len() && i > 0;
            self.m.locals[id].empty = i >= values.len() && !multi;
            self.activate(id, from);
            if top {
                self.m.top_level.push(TopItem::Local(id));
            }
        }
    }

    /// Parses parameters and body after the function name; returns the new function's id.
    pub(super) fn function_body(
        &mut self,
        name: Option<String>,
        selection: Range<usize>,
        start: usize,
        is_method: bool,
        recursive: Option<LocalId>,
    ) -> usize {
        let fid = self.m.functions.len();
        let doc = self.doc_before(start);
        self.m.functions.push(Function { name, is_method, selection, doc, ..Default::default() });
        if !self.enter() {
            self.leave();
            return fid;
        }
        self.recursive.push(recursive);
        let mark = self.scope_mark();
        if is_method {
            let here = self.start();
            let id = self.declare("self", here..here, LocalKind::SelfParam, Value::Unknown);
            self.m.uses.pop();
            self.activate(id, here);
        }
        self.params(fid);
        self.block_body();
        self.close_scope(mark, self.start());
        self.expect_kw(Kw::End);
        self.recursive.pop();
        self.m.functions[fid].range = start..self.prev_end();
        self.leave();
        fid
    }

    fn params(&mut self, fid: usize) {
        self.expect_op("(");
        let from = self.start();
        while !self.is_op(")") {
            if self.eat_op("...") {
                self.m.functions[fid].vararg = true;
                break;
            }
            let Some((n, r)) = self.expect_name() else { break };
            self.m.functions[fid].params.push(n.to_string());
            let id = self.declare(n, r, LocalKind::Param, Value::Unknown);
            self.activate(id, from);
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")");
    }

    /// `---` comment lines directly above `start` (no blank line between), dashes removed.
    fn doc_before(&self, start: usize) -> Option<String> {
        let mut i = self.comments.partition_point(|c| (c.end as usize) <= start);
        let mut lines = Vec::new();
        let mut next = start;
        while i > 0 {
            let c = self.comments[i - 1];
            let gap = &self.text[c.end as usize..next];
            let body = &self.text[c.start as usize..c.end as usize];
            if !gap.trim().is_empty() || gap.matches('\n').count() > 1 || !body.starts_with("---") {
                break;
            }
            lines
                .push(body.trim_start_matches('-').strip_prefix(' ').unwrap_or(body.trim_start_matches('-')));
            next = c.start as usize;
            i -= 1;
        }
        if lines.is_empty() {
            return None;
        }
        lines.reverse();
        Some(lines.join("\n"))
    }
}
