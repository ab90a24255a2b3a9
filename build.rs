//! Exports the Lua C API from the `llmspell` binary, so C modules built for Lua 5.4 (Debian's
//! lua-lpeg, lua-cjson, ...) load with `require` in `llmspell run` and the session, as in `lua5.4`.
//! A dynamic list (not --export-dynamic) keeps every other symbol private. Listed symbols are
//! dynamic exports, which `--gc-sections` keeps; Rust's LTO does not touch the C library.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The list of live Lua threads, which Lua's own hooks fill (see .cargo/config.toml).
    println!("cargo:rerun-if-changed=src/lua/c/threads.c");
    println!("cargo:rerun-if-changed=src/lua/c/llmspell_threads.h");
    cc::Build::new().file("src/lua/c/threads.c").compile("llmspell_threads");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let list = out.join("lua-api.list");
    std::fs::write(&list, "{\n  lua_*;\n  luaL_*;\n  luaopen_*;\n};\n").expect("write the dynamic list");
    println!("cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}", list.display());
}
