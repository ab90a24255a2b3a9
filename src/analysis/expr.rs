//! Expressions: precedence climbing as in Lua's `subexpr`, suffixed expressions, table constructors,
//! calls (recorded for signature help and `require`), and assignment/call statements.

use super::lexer::{Kw, Tok};
use super::model::{Access, Call, Field, FieldStore, FieldUse, Table, Target, TopItem, Value};
use super::parser::Parser;
use std::ops::Range;

/// What an expression is, as far as assignments need: a name, a field path from a name, or other.
#[derive(Clone, Debug)]
pub(super) enum Shape {
    /// Index into `Model::uses` of the name.
    Name(usize),
    Field(Target, Vec<String>, Range<usize>),
    Call,
    /// `x[k]`.
    Index,
    Other,
}

#[derive(Clone, Debug)]
pub(super) struct Expr {
    pub value: Value,
    pub shape: Shape,
    /// A call or `...`: may give several values.
    pub multi: bool,
    /// The use of the name this expression indexes (`a` in `a.b[c].d`), when no call is between:
    /// assigning to such an expression mutates that name rather than reading it.
    pub base: Option<usize>,
}

impl Expr {
    fn with_base(mut self, base: Option<usize>) -> Expr {
        self.base = base;
        self
    }
    fn of(value: Value) -> Expr {
        Expr { value, shape: Shape::Other, multi: false, base: None }
    }
}

/// Binary operators with (left, right) priority, from Lua's lparser.c.
fn binary_priority(t: Tok) -> Option<(u8, u8)> {
    Some(match t {
        Tok::Keyword(Kw::Or) => (1, 1),
        Tok::Keyword(Kw::And) => (2, 2),
        Tok::Op("<" | ">" | "<=" | ">=" | "~=" | "==") => (3, 3),
        Tok::Op("|") => (4, 4),
        Tok::Op("~") => (5, 5),
        Tok::Op("&") => (6, 6),
        Tok::Op("<<" | ">>") => (7, 7),
        Tok::Op("..") => (9, 8),
        Tok::Op("+" | "-") => (10, 10),
        Tok::Op("*" | "/" | "//" | "%") => (11, 11),
        Tok::Op("^") => (14, 13),
        _ => return None,
    })
}

const UNARY_PRIORITY: u8 = 12;

/// The text of a string literal token without its quotes or long brackets (escapes kept).
pub(super) fn string_content(tok: &str) -> &str {
    if let Some(rest) = tok.strip_prefix('[') {
        let level = rest.bytes().take_while(|&b| b == b'=').count();
        let inner = &rest[level + 1..];
        inner.get(..inner.len().saturating_sub(level + 2)).unwrap_or("")
    } else {
        tok.get(1..tok.len().saturating_sub(1)).unwrap_or("")
    }
}

impl Parser<'_> {
    pub(super) fn expr(&mut self) -> Expr {
        self.subexpr(0)
    }

    pub(super) fn expr_list(&mut self) -> Vec<Expr> {
        let mut list = vec![self.expr()];
        while self.eat_op(",") {
            list.push(self.expr());
        }
        list
    }

    fn subexpr(&mut self, limit: u8) -> Expr {
        if !self.enter() {
            self.leave();
            return Expr::of(Value::Unknown);
        }
        let mut left = match self.tok() {
            Tok::Keyword(Kw::Not) | Tok::Op("-" | "#" | "~") => {
                let op = self.tok();
                self.advance();
                self.subexpr(UNARY_PRIORITY);
                Expr::of(match op {
                    Tok::Keyword(Kw::Not) => Value::Boolean,
                    _ => Value::Number,
                })
            }
            _ => self.simple_expr(),
        };
        while let Some((l, r)) = binary_priority(self.tok()) {
            if l <= limit {
                break;
            }
            let op = self.tok();
            self.advance();
            self.subexpr(r);
            left = Expr::of(match op {
                Tok::Op("..") => Value::Str,
                Tok::Op("+" | "-" | "*" | "/" | "//" | "%" | "^" | "&" | "|" | "~" | "<<" | ">>") => {
                    Value::Number
                }
                Tok::Op(_) => Value::Boolean,
                _ => Value::Unknown,
            });
        }
        self.leave();
        left
    }

    fn simple_expr(&mut self) -> Expr {
        let value = match self.tok() {
            Tok::Number => Value::Number,
            Tok::Str => Value::Str,
            Tok::Keyword(Kw::Nil) => Value::Nil,
            Tok::Keyword(Kw::True | Kw::False) => Value::Boolean,
            Tok::Op("...") => {
                self.advance();
                return Expr { value: Value::Unknown, shape: Shape::Other, multi: true, base: None };
            }
            Tok::Op("{") => return Expr::of(Value::Table(self.constructor())),
            Tok::Keyword(Kw::Function) => {
                let kw = self.range();
                self.advance();
                let f = self.function_body(None, kw.clone(), kw.start, false, None);
                return Expr::of(Value::Function(f));
            }
            _ => return self.suffixed_expr(),
        };
        self.advance();
        Expr::of(value)
    }

    fn primary_expr(&mut self) -> Expr {
        match self.tok() {
            Tok::Name => {
                let (name, r) = (self.slice(), self.range());
                self.advance();
                let (target, idx) = self.use_name(name, r);
                Expr {
                    value: Value::Path(target, Vec::new()),
                    shape: Shape::Name(idx),
                    multi: false,
                    base: Some(idx),
                }
            }
            Tok::Op("(") => {
                self.advance();
                let inner = self.expr();
                self.expect_op(")");
                Expr::of(inner.value)
            }
            _ => {
                self.error();
                Expr::of(Value::Unknown)
            }
        }
    }

    pub(super) fn suffixed_expr(&mut self) -> Expr {
        let mut e = self.primary_expr();
        loop {
            match self.tok() {
                Tok::Op(".") => {
                    self.advance();
                    let Some((name, r)) = self.expect_name() else { return e };
                    e = self.field_of(e, name, r);
                }
                Tok::Op("[") => {
                    self.advance();
                    self.expr();
                    self.expect_op("]");
                    e = Expr { shape: Shape::Index, ..Expr::of(Value::Unknown) }.with_base(e.base);
                }
                Tok::Op(":") => {
                    self.advance();
                    let Some((name, r)) = self.expect_name() else { return e };
                    let callee = self.field_of(e, name, r).value;
                    e = self.call_args(callee, true);
                }
                Tok::Op("(" | "{") | Tok::Str => {
                    let callee = e.value;
                    e = self.call_args(callee, false);
                }
                _ => return e,
            }
        }
    }

    fn field_of(&mut self, base: Expr, name: &str, r: Range<usize>) -> Expr {
        match base.value {
            Value::Path(target, mut path) if !base.multi => {
                path.push(name.to_string());
                self.m.field_uses.push(FieldUse {
                    base: target.clone(),
                    path: path.clone(),
                    range: r.clone(),
                });
                let shape = Shape::Field(target.clone(), path.clone(), r);
                Expr { value: Value::Path(target, path), shape, multi: false, base: base.base }
            }
            _ => Expr { shape: Shape::Index, ..Expr::of(Value::Unknown) }.with_base(base.base),
        }
    }

    /// Call arguments after the callee; `require "x"` / `require("x")` gives a `Require` value.
    fn call_args(&mut self, callee: Value, method: bool) -> Expr {
        let is_require = callee == Value::Path(Target::Global("require".into()), Vec::new());
        let mut value = Value::Call;
        let open = self.start();
        let mut commas = Vec::new();
        let end = match self.tok() {
            Tok::Str => {
                if is_require {
                    value = Value::Require(string_content(self.slice()).to_string());
                }
                self.advance();
                self.prev_end()
            }
            Tok::Op("{") => {
                self.constructor();
                self.prev_end()
            }
            _ => {
                self.advance();
                if is_require && self.tok() == Tok::Str && self.peek(1) == Tok::Op(")") {
                    value = Value::Require(string_content(self.slice()).to_string());
                }
                while !self.is_op(")") && self.tok() != Tok::Eof {
                    let before = self.pos;
                    self.expr();
                    if self.is_op(",") {
                        commas.push(self.start());
                        self.advance();
                    } else if self.pos == before || !self.is_op(")") {
                        break;
                    }
                }
                // An unclosed call's arguments run to where parsing stopped (the end of the text
                // when the call is the last thing typed).
                if self.eat_op(")") {
                    self.prev_end()
                } else {
                    self.error();
                    self.start()
                }
            }
        };
        self.m.calls.push(Call { callee, method, args: open..end, commas });
        Expr { value, shape: Shape::Call, multi: true, base: None }
    }

    /// `{ ... }`: records the table's named fields; returns its id.
    pub(super) fn constructor(&mut self) -> usize {
        let id = self.m.tables.len();
        let start = self.start();
        self.m.tables.push(Table::default());
        self.expect_op("{");
        // Nesting is bounded by `subexpr`'s depth count (each field value is an expression).
        while !self.is_op("}") && self.tok() != Tok::Eof {
            let before = self.pos;
            if self.tok() == Tok::Name && self.peek(1) == Tok::Op("=") {
                let (name, r) = (self.slice().to_string(), self.range());
                self.advance();
                self.advance();
                let value = self.expr().value;
                self.m.tables[id].fields.push(Field { name, range: r, value });
            } else if self.eat_op("[") {
                self.expr();
                self.expect_op("]");
                self.expect_op("=");
                self.expr();
            } else {
                self.expr();
            }
            if !self.eat_op(",") && !self.eat_op(";") {
                break;
            }
            if self.pos == before {
                break;
            }
        }
        self.expect_op("}");
        self.m.tables[id].range = start..self.prev_end();
        id
    }

    /// `function a.b:c() ... end` statement.
    pub(super) fn function_stat(&mut self) {
        let start = self.start();
        self.advance();
        let Some((name, r)) = self.expect_name() else { return };
        let (target, idx) = self.use_name(name, r.clone());
        let mut path: Vec<String> = Vec::new();
        let mut last = r.clone();
        let mut is_method = false;
        while self.is_op(".") || self.is_op(":") {
            is_method = self.is_op(":");
            self.advance();
            let Some((n, nr)) = self.expect_name() else { break };
            path.push(n.to_string());
            last = nr;
            if is_method {
                break;
            }
        }
        let full = self.text[r.start..last.end].to_string();
        let f = self.function_body(Some(full), last.clone(), start, is_method, None);
        if let Some(field) = path.pop() {
            self.m.uses[idx].access = Access::Mutate;
            let field = Field { name: field, range: last, value: Value::Function(f) };
            self.m.stores.push(FieldStore { base: target, path, field, is_method });
        } else {
            self.m.uses[idx].access = Access::Write;
            if let Target::Global(_) = target {
                self.m.global_values.push((name.to_string(), r, Value::Function(f)));
            } else if let Target::Local(id) = target {
                let local = &mut self.m.locals[id];
                local.fn_assign = Some(r);
                if matches!(local.value, Value::Unknown | Value::Nil) {
                    local.value = Value::Function(f);
                }
            }
        }
        if self.depth == 0 {
            self.m.top_level.push(TopItem::Function(f));
        }
    }

    /// An assignment or a call statement.
    pub(super) fn expr_stat(&mut self) {
        let first = self.suffixed_expr();
        if !self.is_op("=") && !self.is_op(",") {
            if !matches!(first.shape, Shape::Call) {
                self.error();
            }
            return;
        }
        let mut targets = vec![first];
        while self.eat_op(",") {
            targets.push(self.suffixed_expr());
        }
        self.expect_op("=");
        let values = self.expr_list();
        for (i, t) in targets.into_iter().enumerate() {
            let value = values.get(i).map(|e| e.value.clone()).unwrap_or_default();
            self.assign(t, value);
        }
    }

    fn assign(&mut self, target: Expr, value: Value) {
        if let (Some(idx), false) = (target.base, matches!(target.shape, Shape::Name(_))) {
            // `g.x = v` and `g[k] = v` mutate g (luacheck's W112/W241), they do not read it.
            self.m.uses[idx].access = Access::Mutate;
        }
        match target.shape {
            Shape::Name(idx) => {
                self.m.uses[idx].access = Access::Write;
                let r = self.m.uses[idx].range.clone();
                match &self.m.uses[idx].target {
                    Target::Global(name) => self.m.global_values.push((name.clone(), r, value)),
                    Target::Local(id) => {
                        let fn_assign = matches!(value, Value::Function(_)).then_some(r);
                        self.m.locals[*id].fn_assign = fn_assign;
                    }
                }
            }
            Shape::Field(base, mut path, r) => {
                let name = path.pop().unwrap_or_default();
                self.m.field_uses.pop();
                self.m.stores.push(FieldStore {
                    base,
                    path,
                    field: Field { name, range: r, value },
                    is_method: false,
                });
            }
            Shape::Call => self.error(),
            Shape::Index | Shape::Other => {}
        }
    }
}
