//! Failed cells as Jupyter reports them: ename, evalue, and a traceback in the stock interpreter's
//! form (what `lua -e` prints for an uncaught error, without the program name), without the
//! kernel's frames.

/// The ename of every error Lua raises in a cell: runtime errors (whatever value `error` was
/// given), syntax errors and memory errors alike; the evalue and traceback say which.
pub const LUA_ERROR: &str = "LuaError";

/// A failed cell, as Jupyter reports it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

pub(super) fn interrupted_failure() -> Failure {
    Failure {
        ename: "Interrupted".into(),
        evalue: "execution interrupted".into(),
        traceback: vec!["Interrupted: execution interrupted".into()],
    }
}

/// A syntax error: the message alone, as lua prints one (a chunk that did not load has no stack).
pub(super) fn syntax_failure(message: &str) -> Failure {
    let message = message.trim_start_matches("syntax error: ").to_string();
    Failure { ename: LUA_ERROR.into(), traceback: vec![message.clone()], evalue: message }
}

/// A runtime error: `message` is what lua.c's message handler makes of the error value, `tb` the
/// traceback from where it was raised (empty when the value carried its own `__tostring`, as lua's).
pub(super) fn runtime_failure(evalue: String, message: &str, tb: &str) -> Failure {
    let mut traceback = vec![message.to_string()];
    traceback.extend(clean_traceback(tb));
    Failure { ename: LUA_ERROR.into(), evalue, traceback }
}

pub(super) fn root_cause(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_cause(cause),
        mlua::Error::WithContext { cause, .. } => root_cause(cause),
        other => other,
    }
}

/// The traceback lines a user cares about, as lua prints them (tab-indented): not the kernel's own
/// frames, which stand where lua's C caller of the main chunk would (`[C]: in ?`, kept once).
pub(super) fn clean_traceback(tb: &str) -> Vec<String> {
    let mut lines: Vec<String> = tb
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.contains("[llmspell]")
                && !l.contains("[C]: in ?")
                && !l.contains("function 'xpcall'")
        })
        .filter(|l| !l.contains("in upvalue 'xpcall'"))
        .filter(|l| !l.contains("(...tail calls...)") && !l.contains("[C]: in upvalue 'f'"))
        .map(String::from)
        .collect();
    if lines.len() <= 1 {
        return Vec::new(); // only the "stack traceback:" header is left
    }
    lines.push("\t[C]: in ?".into());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracebacks_lose_the_kernels_frames_and_keep_the_users() {
        let tb = "stack traceback:\n\t[C]: in function 'error'\n\t[cell]:2: in function 'f'\n\t[cell]:4: in main chunk\n\t[llmspell]:540: in function <[llmspell]:539>\n\t[C]: in function 'xpcall'\n\t[C]: in ?";
        assert_eq!(
            clean_traceback(tb),
            vec![
                "stack traceback:",
                "\t[C]: in function 'error'",
                "\t[cell]:2: in function 'f'",
                "\t[cell]:4: in main chunk",
                "\t[C]: in ?"
            ]
        );
        assert!(clean_traceback("stack traceback:\n\t[C]: in ?").is_empty(), "only the header left");
    }

    #[test]
    fn syntax_errors_drop_the_generic_prefix() {
        let f = syntax_failure("syntax error: [cell]:1: unexpected symbol near '+'");
        assert_eq!(
            (f.ename.as_str(), f.evalue.as_str()),
            ("LuaError", "[cell]:1: unexpected symbol near '+'")
        );
        assert_eq!(f.traceback, vec!["[cell]:1: unexpected symbol near '+'"]);
    }

    #[test]
    #[allow(clippy::arc_with_non_send_sync)] // mlua's own error type holds its cause so
    fn the_root_cause_is_found_through_callback_errors() {
        let inner = mlua::Error::runtime("boom");
        let wrapped =
            mlua::Error::CallbackError { traceback: String::new(), cause: std::sync::Arc::new(inner) };
        assert!(matches!(root_cause(&wrapped), mlua::Error::RuntimeError(m) if m == "boom"));
    }
}
