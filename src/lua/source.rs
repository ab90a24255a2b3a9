//! Reading a cell's source: how to make it return its values, how many blocks it leaves open.

/// `return <exprs>` without making the last call a tail call (which would drop its frame from
/// tracebacks and error positions): the values pass through an identity function instead. Two
/// forms, to try in order: the closing parenthesis on the code's last line keeps errors on the lines
/// the user wrote (Lua gives an argument's code the line where the call closes), but a trailing
/// `-- comment` swallows it; the second form puts it on a line of its own.
pub(super) fn returning(exprs: &str) -> [String; 2] {
    [
        format!("return (function(...) return ... end)({exprs})"),
        format!("return (function(...) return ... end)({exprs}\n)"),
    ]
}
/// How many blocks are open at the end of `code`: a hint for the next line's indent.
pub(super) fn open_blocks(code: &str) -> usize {
    let mut depth: i64 = 0;
    for word in code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || "{}()".contains(c))) {
        for token in split_brackets(word) {
            match token {
                "do" | "then" | "repeat" | "function" | "{" | "(" => depth += 1,
                "end" | "until" | "}" | ")" | "elseif" => depth -= 1,
                _ => {}
            }
        }
    }
    // `while x do` and `for ... do` count once through `do`; `if x then` once through `then`.
    depth.max(0) as usize
}

fn split_brackets(word: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in word.char_indices() {
        if "{}()".contains(c) {
            if start < i {
                out.push(&word[start..i]);
            }
            out.push(&word[i..i + 1]);
            start = i + 1;
        }
    }
    if start < word.len() {
        out.push(&word[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returning_keeps_a_trailing_comment_from_swallowing_the_call() {
        assert_eq!(returning("1, 2 -- two")[1], "return (function(...) return ... end)(1, 2 -- two\n)");
    }

    #[test]
    fn open_blocks_counts_what_is_left_open() {
        assert_eq!(open_blocks("for i = 1, 3 do"), 1);
        assert_eq!(open_blocks("if x then\n  while y do"), 2);
        assert_eq!(open_blocks("f(function() return {"), 3);
        assert_eq!(open_blocks("do end"), 0);
        assert_eq!(open_blocks("end end"), 0);
    }
}
