//! Lua 5.4 tokenizer over byte offsets. Never fails: unknown bytes become `Tok::Error` tokens and an
//! unfinished string or long comment ends at the end of the text (and is flagged as an error).

/// Token kinds. Names and literals are kept as byte ranges into the text, not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tok {
    Name,
    Keyword(Kw),
    Number,
    Str,
    Op(&'static str),
    Eof,
    /// A byte sequence that is not Lua (or an unfinished string/long bracket).
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kw {
    And,
    Break,
    Do,
    Else,
    Elseif,
    End,
    False,
    For,
    Function,
    Goto,
    If,
    In,
    Local,
    Nil,
    Not,
    Or,
    Repeat,
    Return,
    Then,
    True,
    Until,
    While,
}

pub const KEYWORDS: &[(&str, Kw)] = &[
    ("and", Kw::And),
    ("break", Kw::Break),
    ("do", Kw::Do),
    ("else", Kw::Else),
    ("elseif", Kw::Elseif),
    ("end", Kw::End),
    ("false", Kw::False),
    ("for", Kw::For),
    ("function", Kw::Function),
    ("goto", Kw::Goto),
    ("if", Kw::If),
    ("in", Kw::In),
    ("local", Kw::Local),
    ("nil", Kw::Nil),
    ("not", Kw::Not),
    ("or", Kw::Or),
    ("repeat", Kw::Repeat),
    ("return", Kw::Return),
    ("then", Kw::Then),
    ("true", Kw::True),
    ("until", Kw::Until),
    ("while", Kw::While),
];

/// Operators, longest first so that a prefix match picks the longest one.
const OPS: &[&str] = &[
    "...", "..", "==", "~=", "<=", ">=", "<<", ">>", "//", "::", "+", "-", "*", "/", "%", "^", "#", "&", "~",
    "|", "<", ">", "=", "(", ")", "{", "}", "[", "]", ";", ":", ",", ".",
];

#[derive(Clone, Copy, Debug)]
pub struct Token {
    pub tok: Tok,
    pub start: u32,
    pub end: u32,
}

/// A comment: its range and whether it is a `---` doc line.
#[derive(Clone, Copy, Debug)]
pub struct Comment {
    pub start: u32,
    pub end: u32,
}

pub struct Lexed {
    pub tokens: Vec<Token>,
    pub comments: Vec<Comment>,
    /// First lexical error (unfinished string, stray byte).
    pub error: Option<(u32, u32)>,
}

pub fn lex(text: &str) -> Lexed {
    let mut lx = Lexer { b: text.as_bytes(), i: 0, tokens: Vec::new(), comments: Vec::new(), error: None };
    // A leading `#!` line is skipped, as lua does.
    if lx.b.starts_with(b"#") {
        while lx.i < lx.b.len() && lx.b[lx.i] != b'\n' {
            lx.i += 1;
        }
    }
    lx.run();
    let n = lx.b.len() as u32;
    lx.tokens.push(Token { tok: Tok::Eof, start: n, end: n });
    Lexed { tokens: lx.tokens, comments: lx.comments, error: lx.error }
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    tokens: Vec<Token>,
    comments: Vec<Comment>,
    error: Option<(u32, u32)>,
}

impl Lexer<'_> {
    fn run(&mut self) {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let start = self.i;
            if c.is_ascii_whitespace() {
                self.i += 1;
                continue;
            }
            let tok = if c == b'-' && self.b.get(self.i + 1) == Some(&b'-') {
                self.comment();
                continue;
            } else if c.is_ascii_alphabetic() || c == b'_' {
                self.name()
            } else if c.is_ascii_digit() || (c == b'.' && self.peek_digit(1)) {
                self.number()
            } else if c == b'"' || c == b'\'' {
                self.short_string(c)
            } else if c == b'[' && self.long_bracket_level().is_some() {
                let level = self.long_bracket_level().unwrap_or(0);
                self.long_bracket(level)
            } else if let Some(op) = OPS.iter().find(|op| self.b[self.i..].starts_with(op.as_bytes())) {
                self.i += op.len();
                Tok::Op(op)
            } else {
                self.i += utf8_len(c);
                Tok::Error
            };
            if tok == Tok::Error && self.error.is_none() {
                self.error = Some((start as u32, self.i as u32));
            }
            self.tokens.push(Token { tok, start: start as u32, end: self.i as u32 });
        }
    }

    fn peek_digit(&self, k: usize) -> bool {
        self.b.get(self.i + k).is_some_and(u8::is_ascii_digit)
    }

    fn name(&mut self) -> Tok {
        let start = self.i;
        while self.i < self.b.len() && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_') {
            self.i += 1;
        }
        let word = &self.b[start..self.i];
        match KEYWORDS.iter().find(|(k, _)| k.as_bytes() == word) {
            Some((_, kw)) => Tok::Keyword(*kw),
            None => Tok::Name,
        }
    }

    fn number(&mut self) -> Tok {
        let hex = self.b[self.i] == b'0' && matches!(self.b.get(self.i + 1), Some(b'x' | b'X'));
        if hex {
            self.i += 2;
        }
        let (exp_lo, exp_hi) = if hex { (b'p', b'P') } else { (b'e', b'E') };
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if (c == exp_lo || c == exp_hi) && matches!(self.b.get(self.i + 1), Some(b'+' | b'-')) {
                self.i += 2;
            } else if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        Tok::Number
    }

    fn short_string(&mut self, quote: u8) -> Tok {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'\n' | b'\r' => return Tok::Error,
                c if c == quote => {
                    self.i += 1;
                    return Tok::Str;
                }
                _ => self.i += 1,
            }
        }
        self.i = self.b.len();
        Tok::Error
    }

    /// At `[`, the level of a long bracket `[==[` (number of `=`), if this is one.
    fn long_bracket_level(&self) -> Option<usize> {
        let mut j = self.i + 1;
        while self.b.get(j) == Some(&b'=') {
            j += 1;
        }
        (self.b.get(j) == Some(&b'[')).then_some(j - self.i - 1)
    }

    /// Consumes `[==[ ... ]==]`; an unclosed one runs to the end and is an error.
    fn long_bracket(&mut self, level: usize) -> Tok {
        self.i += level + 2;
        let mut close = Vec::with_capacity(level + 2);
        close.push(b']');
        close.extend(std::iter::repeat_n(b'=', level));
        close.push(b']');
        match find(&self.b[self.i..], &close) {
            Some(k) => {
                self.i += k + close.len();
                Tok::Str
            }
            None => {
                self.i = self.b.len();
                Tok::Error
            }
        }
    }

    fn comment(&mut self) {
        let start = self.i;
        self.i += 2;
        let long = self.b.get(self.i) == Some(&b'[') && self.long_bracket_level().is_some();
        if long {
            let level = self.long_bracket_level().unwrap_or(0);
            if self.long_bracket(level) == Tok::Error && self.error.is_none() {
                self.error = Some((start as u32, self.i as u32));
            }
        } else {
            while self.i < self.b.len() && self.b[self.i] != b'\n' {
                self.i += 1;
            }
        }
        self.comments.push(Comment { start: start as u32, end: self.i as u32 });
    }
}

fn utf8_len(c: u8) -> usize {
    match c {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
