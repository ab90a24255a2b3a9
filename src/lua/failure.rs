//! Failed cells as Jupyter reports them: ename, evalue, and a traceback without the kernel's frames.

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

pub(super) fn syntax_failure(message: &str) -> Failure {
    let message = message.trim_start_matches("syntax error: ").to_string();
    Failure {
        ename: "SyntaxError".into(),
        traceback: vec![format!("SyntaxError: {message}")],
        evalue: message,
    }
}

pub(super) fn root_cause(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_cause(cause),
        mlua::Error::WithContext { cause, .. } => root_cause(cause),
        other => other,
    }
}

/// The traceback lines a user cares about: not the kernel's own frames.
pub(super) fn clean_traceback(tb: &str) -> Vec<String> {
    let lines: Vec<String> = tb
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.contains("[llmspell]")
                && !l.contains("[C]: in ?")
                && !l.contains("function 'xpcall'")
        })
        .filter(|l| !l.contains("[C]: in function 'error'") && !l.contains("in upvalue 'xpcall'"))
        .filter(|l| !l.contains("(...tail calls...)") && !l.contains("[C]: in upvalue 'f'"))
        .map(|l| l.replace('\t', "  "))
        .collect();
    if lines.len() <= 1 {
        Vec::new() // only the "stack traceback:" header is left
    } else {
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracebacks_lose_the_kernels_frames_and_keep_the_users() {
        let tb = "stack traceback:\n\t[C]: in function 'error'\n\t[cell]:2: in function 'f'\n\t[cell]:4: in main chunk\n\t[llmspell]:540: in function <[llmspell]:539>\n\t[C]: in function 'xpcall'\n\t[C]: in ?";
        assert_eq!(
            clean_traceback(tb),
            vec!["stack traceback:", "  [cell]:2: in function 'f'", "  [cell]:4: in main chunk"]
        );
        assert!(clean_traceback("stack traceback:\n\t[C]: in ?").is_empty(), "only the header left");
    }

    #[test]
    fn syntax_errors_drop_the_generic_prefix() {
        let f = syntax_failure("syntax error: [cell]:1: unexpected symbol near '+'");
        assert_eq!(
            (f.ename.as_str(), f.evalue.as_str()),
            ("SyntaxError", "[cell]:1: unexpected symbol near '+'")
        );
        assert_eq!(f.traceback, vec!["SyntaxError: [cell]:1: unexpected symbol near '+'"]);
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
