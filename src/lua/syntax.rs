//! Lua's own verdict on a text's syntax: the text is compiled (never run) by the vendored Lua 5.4 on a
//! small state with no libraries, so an editor shows exactly the message `lua` would print.

use mlua::chunk::ChunkMode;
use mlua::{Lua, LuaOptions, StdLib};

/// The chunk name in messages; stripped again from what we return.
const NAME: &str = "=lsp";

/// The first syntax error of `text` as Lua reports it: its 1-based line and the message without the
/// chunk name ("'end' expected near <eof>"). None if the text compiles.
pub fn check(text: &str) -> Option<(usize, String)> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).ok()?;
    // Text mode: a chunk that starts like Lua bytecode is an error, never loaded.
    let compiled = lua.load(text).set_name(NAME).set_mode(ChunkMode::Text).into_function();
    let message = match compiled {
        Ok(_) => return None,
        Err(mlua::Error::SyntaxError { message, .. }) => message,
        Err(mlua::Error::MemoryError(_)) => return Some((1, "not enough memory to compile".into())),
        // "C stack overflow" (10 000 nested parentheses) is not a syntax error status for Lua.
        Err(mlua::Error::RuntimeError(message)) => message,
        Err(other) => other.to_string(),
    };
    Some(split_position(&message))
}

/// "lsp:12: unexpected symbol near 'x'" → (12, "unexpected symbol near 'x'").
fn split_position(message: &str) -> (usize, String) {
    let prefix = format!("{}:", &NAME[1..]);
    let Some(rest) = message.strip_prefix(&prefix) else { return (1, message.to_string()) };
    match rest.split_once(": ") {
        Some((line, text)) if line.parse::<usize>().is_ok() => (line.parse().unwrap_or(1), text.to_string()),
        _ => (1, message.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn valid_text_has_no_error() {
        assert_eq!(check("local x = 1\nreturn x\n"), None);
    }

    #[test]
    fn errors_name_their_line_and_token_as_lua_does() {
        let (line, msg) = check("local x = 1\nlocal = 2\n").unwrap();
        assert_eq!(line, 2);
        assert_eq!(msg, "<name> expected near '='");
        // As `lua5.4` says: the end of the text is on line 3, after the last newline.
        let (line, msg) = check("function f()\n  return 1\n").unwrap();
        assert_eq!(line, 3);
        assert!(msg.starts_with("'end' expected (to close 'function' at line 1) near <eof>"), "{msg}");
    }

    #[test]
    fn hostile_texts_give_an_error_not_a_crash() {
        let deep = "x = ".to_string() + &"(".repeat(10_000) + &")".repeat(10_000);
        let (_, msg) = check(&deep).unwrap();
        assert_eq!(msg, "C stack overflow", "as luac5.4 -p says");
        assert!(check("\u{1b}Lua\u{54}\0garbage").is_some());
        let never_runs = "os.exit(3)";
        assert_eq!(check(never_runs), None);
    }
}
