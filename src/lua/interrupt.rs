//! Interrupts that cost normal execution nothing, delivered the way the stock `lua` delivers Ctrl-C:
//! the interrupting thread sets a hook on the Lua state (`lua_sethook` may be called
//! asynchronously), and the hook raises the error inside the running code.
//!
//! Normal execution runs with no hook at all (in Lua 5.4 any hook sends every instruction through the
//! VM's slow path). On an interrupt the hook is set on the main thread and on every coroutine alive
//! (Lua tells us about each thread it creates and frees: src/lua/c/threads.c), so it fires at the next
//! instruction wherever the code runs; once fired on a thread it fires there at every instruction until
//! the cell ends, so code that catches the error with `pcall` is stopped again at its next instruction
//! outside the `pcall`.
//!
//! Our own thread may overwrite or remove the hook just as an interrupt sets it (the hook going back
//! to full speed, a cell starting, a coroutine being created, the user's `debug.sethook`), so an
//! interrupt is not a single shot: the hook looks at the flag again after it removes itself, and
//! while the cell runs after an interrupt a helper thread sets the hook again while the flag is up.
//!
//! Output that waits to be coalesced also needs a look now and then: a write that leaves output pending
//! arms a rare count hook on its thread, which flushes it once it is old enough and then goes away.

use mlua::ffi::{lua_Debug, lua_State, LUA_MASKCALL, LUA_MASKCOUNT, LUA_MASKLINE, LUA_MASKRET};
use std::cell::RefCell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Instructions between two looks at pending output: well under a millisecond of Lua.
const TICK_INSTRUCTIONS: c_int = 1 << 16;

extern "C" {
    /// src/lua/c/threads.c: calls `set` on every live Lua thread, under the list's lock.
    fn llmspell_hook_threads(
        set: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, c_int),
        hook: *mut c_void,
        mask: c_int,
        count: c_int,
    );
}

/// `lua_sethook` with the untyped arguments threads.c passes.
unsafe extern "C" fn set_hook(l: *mut c_void, _hook: *mut c_void, mask: c_int, count: c_int) {
    mlua::ffi::lua_sethook(l as *mut lua_State, Some(hook), mask, count);
}

/// Pauses before the first re-armings that follow an interrupt (a lost hook is repaired at once);
/// after them the hook is set again every REARM_EVERY_MS while the cell runs and the flag is up,
/// which outlasts code that keeps removing hooks itself (`while true do debug.sethook() end`).
const REARM_AFTER_MS: [u64; 5] = [10, 20, 50, 100, 200];
const REARM_EVERY_MS: u64 = 250;

/// Counts the times the debugger's hook was turned on from another thread (new breakpoints, a pause),
/// so the hook can tell that it happened while it was deciding what to watch.
static DEBUGGER_ARMED: AtomicU64 = AtomicU64::new(0);

/// The interrupt flag, and the Lua state to hook when it is raised (from any thread).
#[derive(Default)]
pub struct Interrupter {
    flag: AtomicBool,
    /// A thread re-arming the hook after an interrupt is running.
    rearming: AtomicBool,
    /// A cell runs (an interrupt raised while nothing runs waits for the next one to clear it).
    running: AtomicBool,
    /// The main Lua state's address while it lives; None before and after.
    state: Mutex<Option<usize>>,
}

impl Interrupter {
    /// Asks the running code to stop at its next instruction, on whichever thread it runs.
    pub fn interrupt(self: &Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        self.hook_everything();
        if !self.rearming.swap(true, Ordering::SeqCst) {
            let me = Arc::clone(self);
            let rearm = move || {
                let pauses = REARM_AFTER_MS.into_iter().chain(std::iter::repeat(REARM_EVERY_MS));
                for ms in pauses {
                    std::thread::sleep(Duration::from_millis(ms));
                    if !me.is_set() || !me.running.load(Ordering::SeqCst) {
                        break;
                    }
                    me.hook_everything();
                }
                me.rearming.store(false, Ordering::SeqCst);
            };
            if std::thread::Builder::new().name("interrupt-rearm".into()).spawn(rearm).is_err() {
                self.rearming.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Sets the stopping hook on the main state and every coroutine, if the state lives.
    fn hook_everything(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = *state {
            // SAFETY: the main state is alive while it is registered (unregistered, under this lock,
            // before it is closed), and threads.c holds its list's lock while it hooks each live
            // coroutine (a thread is unlisted before it is freed). lua_sethook is safe to call
            // asynchronously, as lua.c does from its SIGINT handler.
            unsafe {
                mlua::ffi::lua_sethook(l as *mut lua_State, Some(hook), LUA_MASKCOUNT, 1);
                llmspell_hook_threads(set_hook, std::ptr::null_mut(), LUA_MASKCOUNT, 1);
            }
        }
    }

    /// Turns the debugger's hook on (every event but count) on whatever runs, from any thread: new
    /// breakpoints or a pause while a cell runs. The hook itself narrows it down at the next event.
    pub fn arm_debugger(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        DEBUGGER_ARMED.fetch_add(1, Ordering::SeqCst);
        if let Some(l) = *state {
            let mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE;
            // SAFETY: as in `interrupt`.
            unsafe { set_everywhere(l as *mut lua_State, mask, mask, 0) };
        }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Clears the flag; true if it was set.
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::SeqCst)
    }

    /// Brackets a cell: interrupts are re-armed only while one runs.
    pub(super) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    pub(super) fn register(&self, main: *mut lua_State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(main as usize);
    }

    pub(super) fn unregister(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What the hook does on the Lua thread: the interpreter's flag, and flushing aged output (true
/// while output is still pending).
pub(super) struct HookContext {
    pub stop: Box<dyn Fn() -> bool>,
    pub tick: Box<dyn Fn() -> bool>,
}

thread_local! {
    static CONTEXT: RefCell<Option<HookContext>> = const { RefCell::new(None) };
}

pub(super) fn set_context(context: Option<HookContext>) {
    CONTEXT.with(|c| *c.borrow_mut() = context);
}

/// Removes our hook from a thread (a cell starts without one; a user's own hook is left alone).
///
/// # Safety
/// `l` must be a live Lua state used by this thread.
pub(super) unsafe fn clear(l: *mut lua_State) {
    let ours = hook as mlua::ffi::lua_Hook;
    if mlua::ffi::lua_gethook(l).is_some_and(|h| std::ptr::fn_addr_eq(h, ours)) {
        mlua::ffi::lua_sethook(l, None, 0, 0);
    }
}

/// Output is pending on this thread: look at it again after a while (unless a hook is already set,
/// ours or the user's).
///
/// # Safety
/// `l` must be the live Lua state running on this thread.
pub(super) unsafe fn arm_tick(l: *mut lua_State) {
    let ours = hook as mlua::ffi::lua_Hook;
    match mlua::ffi::lua_gethook(l) {
        None => mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, TICK_INSTRUCTIONS),
        // The debugger's hook: add the count event to what it watches.
        Some(h) if std::ptr::fn_addr_eq(h, ours) => {
            let mask = mlua::ffi::lua_gethookmask(l);
            if mask & LUA_MASKCOUNT == 0 {
                mlua::ffi::lua_sethook(l, Some(hook), mask | LUA_MASKCOUNT, TICK_INSTRUCTIONS);
            }
        }
        Some(_) => {}
    }
}

/// What the hook found: stop the code, or whether output is still pending. Panics stay on this side.
fn fire() -> (bool, bool) {
    let look = || {
        CONTEXT.with(|c| match c.try_borrow() {
            Ok(c) => match c.as_ref() {
                Some(ctx) if (ctx.stop)() => (true, false),
                Some(ctx) => (false, (ctx.tick)()),
                None => (false, false),
            },
            Err(_) => (false, true),
        })
    };
    std::panic::catch_unwind(look).unwrap_or((false, false))
}

/// Whether an interrupt asks the code to stop (without looking at output).
fn stop_requested() -> bool {
    let look = || {
        CONTEXT.with(|c| match c.try_borrow() {
            Ok(c) => c.as_ref().is_some_and(|ctx| (ctx.stop)()),
            Err(_) => false,
        })
    };
    std::panic::catch_unwind(look).unwrap_or(false)
}

/// The kernel's one hook: interrupts and pending output on count events, the debugger
/// (debug_hook.rs) on call, return and line events. It leaves exactly the events still wanted.
unsafe extern "C-unwind" fn hook(l: *mut lua_State, ar: *mut lua_Debug) {
    let counting = (*ar).event == mlua::ffi::LUA_HOOKCOUNT;
    let armed = DEBUGGER_ARMED.load(Ordering::SeqCst);
    let (stop, pending) = if counting {
        fire()
    } else {
        (stop_requested(), mlua::ffi::lua_gethookmask(l) & LUA_MASKCOUNT != 0)
    };
    if !stop {
        let debug = if counting {
            std::panic::catch_unwind(|| super::debug_hook::wanted_mask(l)).unwrap_or(0)
        } else {
            std::panic::catch_unwind(|| super::debug_hook::on_event(l, ar)).unwrap_or(0)
        };
        // The debugger may have stopped in there, and an interrupt (or shutdown) ended the stop.
        if !stop_requested() {
            let count = if counting { TICK_INSTRUCTIONS } else { mlua::ffi::lua_gethookcount(l) };
            let mask = debug | if pending { LUA_MASKCOUNT } else { 0 };
            if mask == 0 {
                // Nothing to watch for: back to full speed.
                mlua::ffi::lua_sethook(l, None, 0, 0);
            } else if counting || mask != mlua::ffi::lua_gethookmask(l) {
                mlua::ffi::lua_sethook(l, Some(hook), mask, count);
            } else {
                return;
            }
            // An interrupt (or the debugger) may have set its hook after our look, and we just
            // replaced it: look again (the fence keeps our write to the hook before the reads).
            fence(Ordering::SeqCst);
            if stop_requested() {
                mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, 1);
            } else if DEBUGGER_ARMED.load(Ordering::SeqCst) != armed {
                let watch = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | (mask & LUA_MASKCOUNT);
                mlua::ffi::lua_sethook(l, Some(hook), watch, count);
            }
            return;
        }
    }
    // Every instruction from now on, on this thread, until the cell ends: a pcall that caught the
    // error does not get far.
    mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, 1);
    // No Rust value lives in this frame past this point: lua_error does not return.
    mlua::ffi::lua_pushstring(l, c"Interrupted".as_ptr());
    mlua::ffi::lua_error(l);
}

/// The debug library's own `sethook`, which the session's `debug.sethook` calls.
static DEBUG_SETHOOK: std::sync::OnceLock<mlua::ffi::lua_CFunction> = std::sync::OnceLock::new();

/// The session's `debug.sethook`: the library's, except that it does not undo an interrupt raised
/// while it ran (a loop calling `debug.sethook()` would otherwise remove each hook an interrupt sets).
unsafe extern "C-unwind" fn sethook(l: *mut lua_State) -> c_int {
    let Some(original) = DEBUG_SETHOOK.get() else { return 0 };
    let results = original(l);
    fence(Ordering::SeqCst);
    if stop_requested() {
        mlua::ffi::lua_sethook(l, Some(hook), LUA_MASKCOUNT, 1);
    }
    results
}

/// Puts our `sethook` in the session's debug library.
pub(super) fn guard_debug_sethook(lua: &mlua::Lua) {
    // SAFETY: plain stack work on a live state, balanced; the original is a C function of the
    // debug library (the same in every state), called with the arguments it was called with.
    lua.exec_raw_lua(|raw| unsafe {
        let l = raw.state();
        if mlua::ffi::lua_getglobal(l, c"debug".as_ptr()) == mlua::ffi::LUA_TTABLE {
            mlua::ffi::lua_getfield(l, -1, c"sethook".as_ptr());
            if let Some(found) = mlua::ffi::lua_tocfunction(l, -1) {
                if std::ptr::fn_addr_eq(*DEBUG_SETHOOK.get_or_init(|| found), found) {
                    mlua::ffi::lua_pushcfunction(l, sethook);
                    mlua::ffi::lua_setfield(l, -3, c"sethook".as_ptr());
                }
            }
            mlua::ffi::lua_pop(l, 1);
        }
        mlua::ffi::lua_pop(l, 1);
    });
}

/// Sets the hook with `mask` on the main state and every live coroutine (the debugger's breakpoints
/// and stepping: new coroutines inherit the hook of the thread that creates them).
///
/// # Safety
/// `main` must be a live main Lua state.
pub(super) unsafe fn set_everywhere(main: *mut lua_State, mask: c_int, coroutines: c_int, count: c_int) {
    llmspell_hook_threads(set_hook, std::ptr::null_mut(), coroutines, count);
    mlua::ffi::lua_sethook(main, Some(hook), mask, count);
}
