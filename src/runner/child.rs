//! The forked runner: becomes the caller's process in all that matters (fds 0-2, cwd, environment,
//! umask, default signal dispositions), then runs the script the way the stock `lua` program does:
//! a fresh state with every standard library, `arg`, `LUA_INIT`, `package.path`/`cpath` as Debian's
//! `lua5.4` computes them, errors as `progname: message` with a traceback, the same SIGINT handling
//! (first interrupt: "interrupted!" error; the signal is then back to its default, so a second one
//! kills). The only addition is the `state` global, on the same store as the session's.
//!
//! Written from the behaviour of `lua.c` (Lua 5.4), not from its code.

use super::lua_call::{docall, interrupt_signal, l_message, report, stderr, stdout, Ctx, LuaOptions};
use super::lua_repl;
use super::proto::Request;
use crate::state::Store;
use mlua::ffi;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// The store, for the exit-time flush (os.exit never returns to us).
static STORE: AtomicPtr<RefCell<Store>> = AtomicPtr::new(ptr::null_mut());

/// Where the script stands in `argv` (lua's options read from `first` on, as the run will read
/// them), if there is one; `-` is the script from stdin. None too for a bad option.
pub(crate) fn script_position(argv: &[Vec<u8>], first: usize) -> Option<usize> {
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(a.clone()).unwrap_or_default()).collect();
    collect_options(&argv, first).ok()?.script
}

/// Reads lua's options from `argv[first..]` as lua.c does: they stop at the script, `-` or `--`.
fn collect_options(argv: &[CString], first: usize) -> Result<LuaOptions, usize> {
    let mut o = LuaOptions::default();
    let mut i = first;
    while i < argv.len() {
        let a = argv[i].as_bytes();
        let alone = a.len() == 2;
        match (a.first(), a.get(1)) {
            (Some(b'-'), None) => {
                o.script = Some(i); // `-`: the script is stdin
                return Ok(o);
            }
            (Some(b'-'), Some(b'-')) if alone => {
                o.script = (i + 1 < argv.len()).then_some(i + 1);
                return Ok(o);
            }
            (Some(b'-'), Some(b'E')) if alone => o.no_env = true,
            (Some(b'-'), Some(b'W')) if alone => {}
            (Some(b'-'), Some(b'i')) if alone => (o.interactive, o.version) = (true, true),
            (Some(b'-'), Some(b'v')) if alone => o.version = true,
            (Some(b'-'), Some(c @ (b'e' | b'l'))) => {
                o.execute |= *c == b'e';
                if alone {
                    match argv.get(i + 1) {
                        Some(next) if !next.as_bytes().starts_with(b"-") => i += 1,
                        _ => return Err(i),
                    }
                }
            }
            (Some(b'-'), _) => return Err(i),
            _ => {
                o.script = Some(i);
                return Ok(o);
            }
        }
        i += 1;
    }
    Ok(o)
}

unsafe fn dochunk(l: *mut ffi::lua_State, mut status: c_int, ctx: &Ctx) -> c_int {
    if status == ffi::LUA_OK {
        status = docall(l, 0, 0);
    }
    report(l, status, ctx)
}

/// `LUA_INIT_5_4`, else `LUA_INIT`: `@file` runs the file, anything else is code.
unsafe fn handle_luainit(l: *mut ffi::lua_State, ctx: &Ctx) -> c_int {
    let mut name = c"=LUA_INIT_5_4";
    let mut init = libc::getenv(c"LUA_INIT_5_4".as_ptr());
    if init.is_null() {
        name = c"=LUA_INIT";
        init = libc::getenv(c"LUA_INIT".as_ptr());
    }
    if init.is_null() {
        return ffi::LUA_OK;
    }
    if *init == b'@' as c_char {
        dochunk(l, ffi::luaL_loadfilex(l, init.add(1), ptr::null()), ctx)
    } else {
        dochunk(l, ffi::luaL_loadbufferx(l, init, libc::strlen(init), name.as_ptr(), ptr::null()), ctx)
    }
}

unsafe fn handle_script(l: *mut ffi::lua_State, ctx: &Ctx, script: usize) -> c_int {
    let fname = &ctx.argv[script];
    let from_stdin = fname.as_bytes() == b"-" && ctx.argv[script - 1].as_bytes() != b"--";
    let mut status =
        ffi::luaL_loadfilex(l, if from_stdin { ptr::null() } else { fname.as_ptr() }, ptr::null());
    if status == ffi::LUA_OK {
        // The script's arguments: arg[1] .. arg[#arg], read back from the table as lua does.
        if ffi::lua_getglobal(l, c"arg".as_ptr()) != ffi::LUA_TTABLE {
            ffi::luaL_error(l, c"'arg' is not a table".as_ptr());
        }
        let n = ffi::luaL_len(l, -1) as c_int;
        ffi::luaL_checkstack(l, n + 3, c"too many arguments to script".as_ptr());
        for i in 1..=n {
            ffi::lua_rawgeti(l, -i, i as ffi::lua_Integer);
        }
        ffi::lua_remove(l, -(n + 1));
        status = docall(l, n, ffi::LUA_MULTRET);
    }
    report(l, status, ctx)
}

/// Warnings as the stock interpreter's (lauxlib's): off until `@on`, `Lua warning: ` and the pieces
/// on stderr, `@off` turns them off again. mlua's state has no warning function of its own.
static WARN: AtomicI32 = AtomicI32::new(0); // 0 off, 1 on, 2 on and inside a continued message

unsafe extern "C-unwind" fn warn_function(_ud: *mut libc::c_void, msg: *const c_char, tocont: c_int) {
    let text = std::ffi::CStr::from_ptr(msg).to_bytes();
    let state = WARN.load(Ordering::Relaxed);
    if state != 2 && tocont == 0 && text.first() == Some(&b'@') {
        match text {
            b"@on" => WARN.store(1, Ordering::Relaxed),
            b"@off" => WARN.store(0, Ordering::Relaxed),
            _ => {}
        }
        return;
    }
    if state == 0 {
        return;
    }
    if state == 1 {
        libc::fputs(c"Lua warning: ".as_ptr(), stderr);
    }
    libc::fputs(msg, stderr);
    if tocont != 0 {
        WARN.store(2, Ordering::Relaxed);
    } else {
        libc::fputs(c"\n".as_ptr(), stderr);
        libc::fflush(stderr);
        WARN.store(1, Ordering::Relaxed);
    }
}

/// lua.c's usage message, for a bad option.
unsafe fn print_usage(ctx: &Ctx, bad: &CString) {
    let prog = ctx.progname.as_ref().map_or("lua".into(), |p| p.to_string_lossy().into_owned());
    let bad = bad.to_string_lossy();
    let what = if bad.starts_with("-e") || bad.starts_with("-l") {
        format!("'{bad}' needs argument")
    } else {
        format!("unrecognized option '{bad}'")
    };
    let text = format!(
        "{prog}: {what}\nusage: {prog} [options] [script [args]]\nAvailable options are:\n\
         \x20 -e stat   execute string 'stat'\n\
         \x20 -i        enter interactive mode after executing 'script'\n\
         \x20 -l mod    require library 'mod' into global 'mod'\n\
         \x20 -l g=mod  require library 'mod' into global 'g'\n\
         \x20 -v        show version information\n\
         \x20 -E        ignore environment variables\n\
         \x20 -W        turn warnings on\n\
         \x20 --        stop handling options\n\
         \x20 -         stop handling options and execute stdin\n"
    );
    let text = CString::new(text).unwrap_or_default();
    libc::fputs(text.as_ptr(), stderr);
    libc::fflush(stderr);
}

extern "C" {
    /// Lua's identification string: "$LuaVersion: Lua 5.4.x  Copyright (C) ... $$LuaAuthors: ...".
    static lua_ident: c_char;
}

/// `lua -v`: the version and copyright line of the Lua this binary carries.
unsafe fn print_version() {
    let ident = std::ffi::CStr::from_ptr(&lua_ident).to_string_lossy();
    let line = ident.trim_start_matches("$LuaVersion: ").split(" $").next().unwrap_or("Lua 5.4");
    let line = CString::new(format!("{line}\n")).unwrap_or_default();
    libc::fputs(line.as_ptr(), stdout);
    libc::fflush(stdout);
}

/// `-e stat` and `-l [g=]mod`, in order; `-W` turns warnings on. False when one failed.
unsafe fn run_options(l: *mut ffi::lua_State, ctx: &Ctx, end: usize) -> bool {
    let mut i = ctx.first;
    while i < end {
        let a = ctx.argv[i].as_bytes();
        let option = a[1];
        if option == b'W' {
            ffi::lua_warning(l, c"@on".as_ptr(), 0);
        } else if option == b'e' || option == b'l' {
            let value: &[u8] = if a.len() > 2 {
                &a[2..]
            } else {
                i += 1;
                ctx.argv[i].as_bytes()
            };
            let status = if option == b'e' {
                ffi::luaL_loadbufferx(
                    l,
                    value.as_ptr() as *const c_char,
                    value.len(),
                    c"=(command line)".as_ptr(),
                    ptr::null(),
                )
            } else {
                let (global, module) = match value.iter().position(|&b| b == b'=') {
                    Some(at) => (&value[..at], &value[at + 1..]),
                    None => (value, value),
                };
                ffi::lua_getglobal(l, c"require".as_ptr());
                ffi::lua_pushlstring(l, module.as_ptr() as *const c_char, module.len());
                let status = docall(l, 1, 1);
                if status == ffi::LUA_OK {
                    let global = CString::new(global).unwrap_or_default();
                    ffi::lua_setglobal(l, global.as_ptr());
                }
                if report(l, status, ctx) != ffi::LUA_OK {
                    return false;
                }
                i += 1;
                continue;
            };
            if dochunk(l, status, ctx) != ffi::LUA_OK {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// The protected main, as lua.c's: options, `arg`, generational GC, LUA_INIT, `-e`/`-l`, the
/// script, then the interactive loop for `-i` (or no script on a terminal) or stdin as the script.
unsafe extern "C-unwind" fn pmain(l: *mut ffi::lua_State) -> c_int {
    let ctx = &*(ffi::lua_touserdata(l, 1) as *const Ctx);
    let options = match &ctx.options {
        Ok(o) => o,
        Err(bad) => {
            print_usage(ctx, &ctx.argv[*bad]);
            return 0;
        }
    };
    if options.version {
        print_version();
    }
    if options.no_env {
        ffi::lua_pushboolean(l, 1);
        ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, c"LUA_NOENV".as_ptr());
    }
    // Without a script, `arg[0]` is the word before the options (the interpreter), as lua's is its own name.
    let script = options.script.unwrap_or(ctx.first - 1);
    let argc = ctx.argv.len() as c_int;
    ffi::lua_createtable(l, argc - (script as c_int + 1), script as c_int + 1);
    for (i, a) in ctx.argv.iter().enumerate() {
        ffi::lua_pushstring(l, a.as_ptr());
        ffi::lua_rawseti(l, -2, i as ffi::lua_Integer - script as ffi::lua_Integer);
    }
    ffi::lua_setglobal(l, c"arg".as_ptr());
    ffi::lua_gc(l, ffi::LUA_GCRESTART);
    ffi::lua_gc(l, ffi::LUA_GCGEN, 0, 0);
    if !options.no_env && handle_luainit(l, ctx) != ffi::LUA_OK {
        return 0;
    }
    if !run_options(l, ctx, options.script.unwrap_or(ctx.argv.len())) {
        return 0;
    }
    if let Some(script) = options.script {
        if handle_script(l, ctx, script) != ffi::LUA_OK {
            return 0;
        }
    }
    if options.interactive {
        lua_repl::interactive_loop(l);
    } else if options.script.is_none() && !options.execute && !options.version {
        if libc::isatty(0) == 1 {
            print_version();
            lua_repl::interactive_loop(l);
        } else {
            dochunk(l, ffi::luaL_loadfilex(l, ptr::null(), ptr::null()), ctx);
        }
    }
    ffi::lua_pushboolean(l, 1);
    1
}

/// Writes pending `state` changes; on failure says so and makes the exit status 1.
fn flush_store() -> bool {
    let p = STORE.load(Ordering::Relaxed);
    if p.is_null() {
        return true;
    }
    // SAFETY: set once to a leaked Rc's RefCell that lives until the process ends.
    let cell = unsafe { &*p };
    let Ok(mut store) = cell.try_borrow_mut() else { return true };
    match store.flush() {
        Ok(()) => true,
        Err(e) => {
            store.discard_pending();
            let msg = CString::new(format!("state changes were not saved: {e}")).unwrap_or_default();
            // SAFETY: writing a message on stderr.
            unsafe { l_message(Some(&CString::new("llmspell").unwrap()), msg.as_ptr()) };
            false
        }
    }
}

extern "C" fn flush_at_exit() {
    if !flush_store() {
        // SAFETY: flush C's streams (exit would have), then end with the failure status.
        unsafe {
            libc::fflush(ptr::null_mut());
            libc::_exit(1);
        }
    }
}

fn fail(msg: &str) -> ! {
    let m = CString::new(format!("llmspell: {msg}\n")).unwrap_or_default();
    // SAFETY: write(2) on fd 2 and _exit: nothing else is safe to rely on here.
    unsafe {
        libc::write(2, m.as_ptr() as *const libc::c_void, m.as_bytes().len());
        libc::_exit(1);
    }
}

/// Becomes the caller's process and runs the script; never returns.
pub(crate) fn run(req: Request, fds: [c_int; 3], template: Template) -> ! {
    let interrupt = interrupt_signal();
    // SAFETY: process-level set-up in a freshly forked, single-threaded child.
    unsafe {
        // A session of its own: its own process group (which the zygote signals) and its own
        // scheduler autogroup, so a busy session cell does not share its CPU share with runs.
        libc::setsid();
        for sig in 1..=crate::sys::last_signal() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(interrupt, libc::SIG_IGN);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        for (i, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, i as c_int) < 0 {
                fail(&format!("cannot take over fd {i}: {}", std::io::Error::last_os_error()));
            }
        }
        // Nothing of the zygote's (listener, other clients' connections) stays open in a run.
        crate::sys::close_fds_from(3, &[template.parent.child_fd()]);
        // The zygote only ends before its runs if it is killed: then its clients have reported an
        // error, and their runs must not go on behind their backs.
        template.parent.arm_in_child();
        let cwd = CString::new(req.cwd.clone()).unwrap_or_default();
        if libc::chdir(cwd.as_ptr()) != 0 {
            fail(&format!(
                "cannot enter {}: {}",
                String::from_utf8_lossy(&req.cwd),
                std::io::Error::last_os_error()
            ));
        }
        crate::sys::clear_environment();
        for kv in &req.env {
            if kv.iter().skip(1).any(|&b| b == b'=') && !kv.starts_with(b"=") {
                if let Ok(c) = CString::new(kv.clone()) {
                    libc::putenv(c.into_raw());
                }
            }
        }
        libc::umask(req.umask as libc::mode_t);
    }
    let argv: Vec<CString> = req.argv.iter().map(|a| CString::new(a.clone()).unwrap_or_default()).collect();
    let first = req.first_arg as usize;
    let ctx = Ctx {
        options: collect_options(&argv, first),
        argv,
        first,
        progname: Some(&req.program).filter(|a| !a.is_empty()).and_then(|a| CString::new(a.clone()).ok()),
    };
    let code = main_lua(&ctx, template);
    // SAFETY: the normal end of a C program: atexit handlers (the store), stdio flushed.
    unsafe { libc::exit(code) }
}

/// A Lua state prepared in the zygote before any fork: every standard library, as the stock
/// interpreter opens them, and `state`. Each run gets its own copy-on-write copy, never touched
/// before; what depends on the caller (package paths, the random seed) is set in the run.
pub(crate) struct Template {
    lua: mlua::Lua,
    store: Rc<RefCell<Store>>,
    /// The zygote's end of it closes when the zygote ends: its runs end with it.
    parent: crate::sys::ParentWatch,
}

impl Template {
    pub(crate) fn new(state_path: &Path) -> Result<Template, String> {
        // SAFETY: the full standard library, debug included, as the stock interpreter opens it.
        let lua = unsafe { mlua::Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        let store = Rc::new(RefCell::new(Store::open(state_path)));
        let natives = crate::lua::state_natives(&lua, &store).map_err(|e| e.to_string())?;
        let state = crate::lua::state_global(&lua, natives)?;
        lua.globals().set("state", state).map_err(|e| e.to_string())?;
        // No garbage of the set-up is left for the runs to collect.
        lua.gc_collect().map_err(|e| e.to_string())?;
        let parent = crate::sys::ParentWatch::new().map_err(|e| format!("cannot create a pipe: {e}"))?;
        Ok(Template { lua, store, parent })
    }
}

fn main_lua(ctx: &Ctx, template: Template) -> c_int {
    let Template { lua, store, parent } = template;
    // Armed in `run`: its fds belong to the watch now (closed or read by it), never to a drop.
    std::mem::forget(parent);
    STORE.store(Rc::into_raw(store.clone()) as *mut RefCell<Store>, Ordering::Relaxed);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(flush_at_exit) };
    let use_env = !matches!(ctx.options, Ok(LuaOptions { no_env: true, .. }));
    if let Err(e) = setup(&lua, use_env) {
        fail(&format!("cannot set up Lua: {e}"));
    }
    let l = lua.state();
    // SAFETY: the raw API on the main state, as lua.c's main does.
    let (status, ok) = unsafe {
        ffi::lua_setwarnf(l, Some(warn_function), ptr::null_mut());
        ffi::lua_settop(l, 0);
        ffi::lua_pushcfunction(l, pmain);
        ffi::lua_pushlightuserdata(l, ctx as *const Ctx as *mut libc::c_void);
        let status = ffi::lua_pcall(l, 1, 1, 0);
        let ok = ffi::lua_toboolean(l, -1) != 0;
        report(l, status, ctx);
        (status, ok)
    };
    drop(lua); // lua_close: finalizers run, open files are closed (and flushed)
    let saved = flush_store();
    if ok && status == ffi::LUA_OK && saved {
        0
    } else {
        1
    }
}

/// What depends on the caller: package paths from its environment, and a random seed of its own.
fn setup(lua: &mlua::Lua, use_env: bool) -> mlua::Result<()> {
    crate::lua::set_package_paths(lua, use_env)?;
    // Forked runs share the zygote's addresses and start in the same second: seed from the OS.
    let mut bytes = [0u8; 16];
    crate::sys::random_bytes(&mut bytes).map_err(mlua::Error::external)?;
    let seed = [0, 8].map(|i| u64::from_ne_bytes(bytes[i..i + 8].try_into().unwrap_or_default()));
    let math: mlua::Table = lua.globals().get("math")?;
    math.get::<mlua::Function>("randomseed")?.call::<()>((seed[0] as i64, seed[1] as i64))?;
    Ok(())
}
