//! luacheck's inline options (`-- luacheck: ignore 211`, `-- luacheck: globals foo`, `push`/`pop`,
//! `no unused`, `compat`), so that code written for luacheck gets the same warnings here.
//!
//! As in luacheck, an option comment on a line with code applies to that line only; on a line of its
//! own it applies until the end of the enclosing function (or file), or until its `pop` when it
//! starts with `push`. Lines are 0-based here.

/// One option comment's effect.
#[derive(Debug, Default)]
struct Directive {
    first: usize,
    last: usize,
    /// `ignore` patterns; `[".*"]` for a bare `ignore`.
    ignore: Vec<String>,
    globals: Vec<String>,
    /// `compat` or `std max`: the globals of every Lua version are known.
    compat: bool,
}

pub struct InlineOptions {
    directives: Vec<Directive>,
}

/// Globals that luacheck's `max` std adds to lua54's (Lua 5.1-5.3 compatibility and LuaJIT).
const COMPAT_GLOBALS: &[&str] =
    &["bit32", "gcinfo", "getfenv", "loadstring", "module", "newproxy", "setfenv", "unpack", "bit", "jit"];

impl InlineOptions {
    /// `comments` are byte ranges of comments; `functions` the byte ranges of function bodies.
    pub fn read(
        text: &str,
        comments: &[std::ops::Range<usize>],
        functions: &[std::ops::Range<usize>],
    ) -> Self {
        let lines = LineIndex::new(text);
        let func_lines: Vec<(usize, usize)> = functions
            .iter()
            .map(|f| (lines.line(f.start), lines.line(f.end.saturating_sub(1).max(f.start))))
            .collect();
        let mut directives = Vec::new();
        let mut pushed: Vec<usize> = Vec::new();
        for c in comments {
            let body = text[c.clone()].trim_start_matches('-');
            let body = body.strip_prefix("[[").unwrap_or(body).trim();
            let Some(opts) = body.strip_prefix("luacheck:") else { continue };
            let opts = strip_parens(opts);
            let opts = opts.trim();
            let line = lines.line(c.start);
            if opts == "pop" {
                if let Some(i) = pushed.pop() {
                    let d: &mut Directive = &mut directives[i];
                    d.last = line.min(d.last);
                }
                continue;
            }
            let (push, opts) = match opts.strip_prefix("push") {
                Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim()),
                _ => (false, opts),
            };
            let code_line = !text[lines.start(line)..c.start].trim().is_empty();
            let end = if code_line { line } else { enclosing_end(&func_lines, line, lines.count()) };
            let mut d = parse(opts);
            (d.first, d.last) = (line, end);
            if push {
                pushed.push(directives.len());
            }
            directives.push(d);
        }
        InlineOptions { directives }
    }

    /// Whether luacheck would drop the warning `code` ("W211") about `name` at 0-based `line`.
    pub fn ignores(&self, line: usize, code: &str, name: &str) -> bool {
        let code = code.trim_start_matches('W');
        self.directives.iter().filter(|d| d.first <= line && line <= d.last).any(|d| {
            d.ignore.iter().any(|p| pattern_matches(p, code, name))
                || (code.starts_with('1')
                    && (d.globals.iter().any(|g| g == name) || d.compat && COMPAT_GLOBALS.contains(&name)))
        })
    }
}

/// The last line of the innermost function containing `line`, or the last line of the file.
fn enclosing_end(funcs: &[(usize, usize)], line: usize, count: usize) -> usize {
    funcs
        .iter()
        .filter(|(s, e)| *s < line && line <= *e)
        .min_by_key(|(s, e)| e - s)
        .map_or(count, |(_, e)| *e)
}

/// Options separated by commas: `ignore 211 foo, globals a b, no unused, compat`.
fn parse(opts: &str) -> Directive {
    let mut d = Directive::default();
    for part in opts.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let args = |n: usize| words[n..].iter().map(|s| s.to_string());
        match words.as_slice() {
            ["ignore"] => d.ignore.push(".*".into()),
            ["ignore", ..] => d.ignore.extend(args(1)),
            ["globals" | "new_globals" | "read_globals", ..] => d.globals.extend(args(1)),
            ["new" | "read", "globals", ..] => d.globals.extend(args(2)),
            ["new", "read", "globals", ..] => d.globals.extend(args(3)),
            ["no", "unused"] => d.ignore.push("[23]".into()),
            ["no", "global"] => d.ignore.push("1".into()),
            ["no", "redefined"] => d.ignore.push("4".into()),
            ["compat"] | ["std", "max"] | ["std", "+max"] => d.compat = true,
            _ => {}
        }
    }
    d
}

/// luacheck removes `( ... )` asides from option text.
fn strip_parens(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for ch in s.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

/// An ignore pattern: a code prefix (`21`, `[23]`), a name pattern, or `code/name`.
fn pattern_matches(pattern: &str, code: &str, name: &str) -> bool {
    let (code_pat, name_pat) = match pattern.split_once('/') {
        Some((c, n)) => (Some(c), Some(n)),
        None if pattern.starts_with(|c: char| c.is_ascii_digit() || c == '[') => (Some(pattern), None),
        None => (None, Some(pattern)),
    };
    code_pat.is_none_or(|p| lua_match(p.as_bytes(), code.as_bytes(), false))
        && name_pat.is_none_or(|p| lua_match(p.as_bytes(), name.as_bytes(), true))
}

/// A small Lua-pattern matcher anchored at the start (and at the end when `whole`): literals, `.`,
/// `%a %d %l %s %u %w %p` and escapes, `[...]` sets, and the `* + - ?` quantifiers.
fn lua_match(p: &[u8], s: &[u8], whole: bool) -> bool {
    if p.is_empty() {
        return !whole || s.is_empty();
    }
    let (class_len, next) = class_end(p);
    let item = &p[..class_len];
    let quant = p.get(class_len).copied();
    let matches_one = |ch: u8| single_match(item, ch);
    match quant {
        Some(b'*' | b'-') => {
            let rest = &p[class_len + 1..];
            let mut i = 0;
            loop {
                if lua_match(rest, &s[i..], whole) {
                    return true;
                }
                if i < s.len() && matches_one(s[i]) {
                    i += 1;
                } else {
                    return false;
                }
            }
        }
        Some(b'+') => {
            !s.is_empty()
                && matches_one(s[0])
                && lua_match(&[item, b"*", &p[class_len + 1..]].concat(), &s[1..], whole)
        }
        Some(b'?') => {
            let rest = &p[class_len + 1..];
            (!s.is_empty() && matches_one(s[0]) && lua_match(rest, &s[1..], whole))
                || lua_match(rest, s, whole)
        }
        _ => !s.is_empty() && matches_one(s[0]) && lua_match(&p[next..], &s[1..], whole),
    }
}

/// Length of the single-character class at the start of `p`, and where the next item starts.
fn class_end(p: &[u8]) -> (usize, usize) {
    let len = match p[0] {
        b'%' if p.len() > 1 => 2,
        b'[' => p.iter().skip(1).position(|&b| b == b']').map_or(p.len(), |k| k + 2),
        _ => 1,
    };
    (len, len)
}

fn single_match(item: &[u8], ch: u8) -> bool {
    match item {
        [b'.'] => true,
        [b'%', cls] => class_match(*cls, ch),
        [b'[', set @ .., b']'] => {
            let (neg, set) = match set.split_first() {
                Some((b'^', rest)) => (true, rest),
                _ => (false, set),
            };
            let mut i = 0;
            let mut found = false;
            while i < set.len() {
                if set[i] == b'%' && i + 1 < set.len() {
                    found |= class_match(set[i + 1], ch);
                    i += 2;
                } else if i + 2 < set.len() && set[i + 1] == b'-' {
                    found |= set[i] <= ch && ch <= set[i + 2];
                    i += 3;
                } else {
                    found |= set[i] == ch;
                    i += 1;
                }
            }
            found != neg
        }
        [c, ..] => *c == ch,
        [] => false,
    }
}

fn class_match(cls: u8, ch: u8) -> bool {
    match cls {
        b'a' => ch.is_ascii_alphabetic(),
        b'd' => ch.is_ascii_digit(),
        b'l' => ch.is_ascii_lowercase(),
        b's' => ch.is_ascii_whitespace(),
        b'u' => ch.is_ascii_uppercase(),
        b'w' => ch.is_ascii_alphanumeric(),
        b'p' => ch.is_ascii_punctuation(),
        other => other == ch,
    }
}

/// Byte offset to 0-based line.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset) - 1
    }
    pub fn start(&self, line: usize) -> usize {
        self.starts[line]
    }
    pub fn count(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_codes_and_names() {
        assert!(pattern_matches("21", "211", "x"));
        assert!(pattern_matches("[23]", "211", "x"));
        assert!(!pattern_matches("1", "211", "x"));
        assert!(pattern_matches("_.*", "211", "_foo"));
        assert!(!pattern_matches("foo", "211", "foobar"));
        assert!(pattern_matches("211/f.*", "211", "foo"));
        assert!(pattern_matches(".*", "113", "anything"));
    }

    #[test]
    fn a_comment_after_code_covers_its_line_only() {
        let text = "local a = 1 -- luacheck: ignore\nlocal b = 2\n";
        let k = text.find("--").unwrap();
        let c = k..text.find('\n').unwrap();
        let o = InlineOptions::read(text, std::slice::from_ref(&c), &[]);
        assert!(o.ignores(0, "W211", "a"));
        assert!(!o.ignores(1, "W211", "b"));
    }

    #[test]
    fn a_comment_on_its_own_line_covers_the_rest_of_its_function() {
        let text = "function f()\n-- luacheck: ignore 211\nlocal a\nend\nlocal b\n";
        let k = text.find("--").unwrap();
        let c = k..k + "-- luacheck: ignore 211".len();
        let func = 0..text.find("end").unwrap() + 3;
        let o = InlineOptions::read(text, std::slice::from_ref(&c), std::slice::from_ref(&func));
        assert!(o.ignores(2, "W211", "a"));
        assert!(!o.ignores(4, "W211", "b"));
    }
}
