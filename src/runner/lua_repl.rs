//! The run's interactive mode (`lua -i`, or no script on a terminal): lua.c's read-eval-print loop
//! on the caller's stdin, with line editing on a terminal as Debian's `lua5.4` has it.

use super::lua_call::{docall, l_message, report, set_signal, stdin, stdout, Ctx};
use mlua::ffi;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::ptr;

/// lua.c's read-eval-print loop on the run's stdin (line editing on a terminal): `> ` and `>> ` prompts (or
/// `_PROMPT`/`_PROMPT2`), an expression's values printed, an unfinished statement continued.
pub(super) unsafe fn interactive_loop(l: *mut ffi::lua_State) {
    // Errors in the loop carry no program name, as lua.c's.
    let quiet = Ctx { argv: Vec::new(), first: 0, progname: None, options: Err(0) };
    while let Some(mut chunk) = read_line(l, true) {
        if chunk.first() == Some(&b'=') {
            chunk = [b"return ".as_slice(), &chunk[1..]].concat();
        }
        let load = |code: &[u8]| {
            ffi::luaL_loadbufferx(
                l,
                code.as_ptr() as *const c_char,
                code.len(),
                c"=stdin".as_ptr(),
                ptr::null(),
            )
        };
        let with_return = [b"return ".as_slice(), &chunk, b";"].concat();
        let mut status = load(&with_return);
        if status != ffi::LUA_OK {
            ffi::lua_settop(l, 0);
            loop {
                status = load(&chunk);
                if !is_incomplete(l, status) {
                    break;
                }
                ffi::lua_settop(l, 0);
                match read_line(l, false) {
                    Some(more) => chunk = [chunk.as_slice(), b"\n", &more].concat(),
                    None => {
                        status = load(&chunk);
                        break;
                    }
                }
            }
        }
        if status == ffi::LUA_OK {
            status = docall(l, 0, ffi::LUA_MULTRET);
        }
        if status == ffi::LUA_OK {
            let n = ffi::lua_gettop(l);
            if n > 0 {
                ffi::luaL_checkstack(l, ffi::LUA_MINSTACK, c"too many results to print".as_ptr());
                ffi::lua_getglobal(l, c"print".as_ptr());
                ffi::lua_insert(l, 1);
                if ffi::lua_pcall(l, n, 0, 0) != ffi::LUA_OK {
                    let msg = ffi::lua_tostring(l, -1);
                    let msg = if msg.is_null() { c"?".as_ptr() } else { msg };
                    l_message(None, ffi::lua_pushfstring(l, c"error calling 'print' (%s)".as_ptr(), msg));
                }
            }
        } else {
            report(l, status, &quiet);
        }
        ffi::lua_settop(l, 0);
    }
    ffi::lua_settop(l, 0);
    libc::fputs(c"\n".as_ptr(), stdout);
    libc::fflush(stdout);
}

/// A syntax error at the end of the input: the statement goes on on the next line.
unsafe fn is_incomplete(l: *mut ffi::lua_State, status: c_int) -> bool {
    if status != ffi::LUA_ERRSYNTAX {
        return false;
    }
    let msg = ffi::lua_tostring(l, -1);
    !msg.is_null() && std::ffi::CStr::from_ptr(msg).to_bytes().ends_with(b"<eof>")
}

/// Shows the prompt and reads one line from stdin (without its newline); None at end of input.
unsafe fn read_line(l: *mut ffi::lua_State, first: bool) -> Option<Vec<u8>> {
    let custom = ffi::lua_getglobal(l, if first { c"_PROMPT".as_ptr() } else { c"_PROMPT2".as_ptr() });
    let prompt = if custom == ffi::LUA_TNIL {
        (if first { c"> " } else { c">> " }).as_ptr()
    } else {
        ffi::luaL_tolstring(l, -1, ptr::null_mut())
    };
    let prompt = std::ffi::CStr::from_ptr(prompt).to_string_lossy().into_owned();
    ffi::lua_settop(l, 0);
    libc::fflush(stdout);
    if let Some(edited) = edit_line(&prompt) {
        return edited;
    }
    libc::fputs(CString::new(prompt).unwrap_or_default().as_ptr(), stdout);
    libc::fflush(stdout);
    let mut line = Vec::new();
    let mut buf = [0 as c_char; 512];
    loop {
        if libc::fgets(buf.as_mut_ptr(), buf.len() as c_int, stdin).is_null() {
            return (!line.is_empty()).then_some(line);
        }
        line.extend_from_slice(std::ffi::CStr::from_ptr(buf.as_ptr()).to_bytes());
        if line.last() == Some(&b'\n') {
            line.pop();
            return Some(line);
        }
    }
}

thread_local! {
    /// The line editor, on a terminal (None: not one, or it could not start).
    static EDITOR: RefCell<Option<Option<rustyline::DefaultEditor>>> = const { RefCell::new(None) };
}

/// On a terminal, a line read with line editing and history, as Debian's `lua5.4` (built with
/// readline) reads it; None when stdin or stdout is not a terminal. Ctrl-C at the prompt ends the
/// run by SIGINT, as it ends `lua`.
fn edit_line(prompt: &str) -> Option<Option<Vec<u8>>> {
    EDITOR.with(|editor| {
        let mut editor = editor.borrow_mut();
        let editor = editor.get_or_insert_with(|| {
            // SAFETY: isatty only looks at the descriptors.
            let terminal = unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 };
            let config = rustyline::Config::builder().auto_add_history(true).build();
            terminal.then(|| rustyline::DefaultEditor::with_config(config).ok()).flatten()
        });
        let editor = editor.as_mut()?;
        Some(match editor.readline(prompt) {
            Ok(line) => Some(line.into_bytes()),
            Err(rustyline::error::ReadlineError::Interrupted) => {
                set_signal(libc::SIGINT, libc::SIG_DFL);
                // SAFETY: raising a signal at ourselves.
                unsafe { libc::raise(libc::SIGINT) };
                None
            }
            Err(_) => None,
        })
    })
}
