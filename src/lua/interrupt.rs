//! Interrupts that cost normal execution nothing, delivered the way the stock `lua` delivers Ctrl-C:
//! the interrupting thread sets a hook on the Lua state (`lua_sethook` may be called
//! asynchronously), and the hook raises the error inside the running code.
//!
//! Normal execution carries one rare count hook ([`TICK_INSTRUCTIONS`], every few milliseconds of
//! Lua): it flushes output that has waited, and reaches coroutines (which inherit their creator's
//! hook) if an interrupt comes while one runs. On an interrupt the main thread's hook fires at the
//! next instruction; once it has fired on a thread it fires there at every instruction until the
//! cell ends, so code that catches the error with `pcall` is stopped again at its next instruction
//! outside the `pcall`.

use mlua::ffi::{lua_Debug, lua_State, LUA_MASKCOUNT};
use std::cell::RefCell;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Instructions between two ticks of the hook in normal execution: ~1-5 ms of Lua.
const TICK_INSTRUCTIONS: c_int = 1 << 20;

/// The interrupt flag, and the Lua state to hook when it is raised (from any thread).
#[derive(Default)]
pub struct Interrupter {
    flag: AtomicBool,
    /// The main Lua state's address while it lives; None before and after.
    state: Mutex<Option<usize>>,
}

impl Interrupter {
    /// Asks the running code to stop: at its next instruction on the main thread, within a tick
    /// in a coroutine.
    pub fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = *state {
            // SAFETY: the state is alive while it is registered (unregistered, under this lock,
            // before it is closed); lua_sethook is safe to call asynchronously, as lua.c does from
            // its SIGINT handler.
            unsafe { mlua::ffi::lua_sethook(l as *mut lua_State, Some(hook), LUA_MASKCOUNT, 1) };
        }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Clears the flag; true if it was set.
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::SeqCst)
    }

    pub(super) fn register(&self, main: *mut lua_State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(main as usize);
    }

    pub(super) fn unregister(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What the hook does on the Lua thread: the interpreter's flag and output flushing.
pub(super) struct HookContext {
    pub stop: Box<dyn Fn() -> bool>,
    pub tick: Box<dyn Fn()>,
}

thread_local! {
    static CONTEXT: RefCell<Option<HookContext>> = const { RefCell::new(None) };
}

pub(super) fn set_context(context: Option<HookContext>) {
    CONTEXT.with(|c| *c.borrow_mut() = context);
}

/// The normal hook on a thread (a cell starts with it; a thread that was interrupted gets it back).
///
/// # Safety
/// `l` must be a live Lua state used by this thread.
pub(super) unsafe fn install(l: *mut lua_State) {
    mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, TICK_INSTRUCTIONS);
}

/// Whether the running code must stop; otherwise flushes aged output. Panics stay on this side.
fn fire() -> bool {
    let run = || {
        CONTEXT.with(|c| match c.try_borrow() {
            Ok(c) => match c.as_ref() {
                Some(ctx) if (ctx.stop)() => true,
                Some(ctx) => {
                    (ctx.tick)();
                    false
                }
                None => false,
            },
            Err(_) => false,
        })
    };
    std::panic::catch_unwind(run).unwrap_or(false)
}

unsafe extern "C-unwind" fn hook(l: *mut lua_State, _ar: *mut lua_Debug) {
    if !fire() {
        if mlua::ffi::lua_gethookcount(l) == 1 {
            // Hooked at every instruction for an interrupt that has been served: back to normal.
            install(l);
        }
        return;
    }
    // Every instruction from now on, on this thread, until the cell ends: a pcall that caught the
    // error does not get far.
    mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, 1);
    // No Rust value lives in this frame past this point: lua_error does not return.
    mlua::ffi::lua_pushstring(l, c"Interrupted".as_ptr());
    mlua::ffi::lua_error(l);
}
