//! `package.path` and `package.cpath` as Debian's `lua5.4` computes them, for runs and the session
//! alike: the platform's Lua 5.4 directories (multiarch included), and `LUA_PATH_5_4`, `LUA_PATH`,
//! `LUA_CPATH_5_4`, `LUA_CPATH` with `;;` meaning the default.

use std::os::unix::ffi::OsStrExt;

/// Sets `package.path` and `package.cpath` from this process's environment, or to the defaults
/// when `use_env` is false (`lua -E`).
pub(crate) fn set_package_paths(lua: &mlua::Lua, use_env: bool) -> mlua::Result<()> {
    let package: mlua::Table = lua.globals().get("package")?;
    let (path, cpath) = default_paths();
    let (path, cpath) = if use_env {
        (path_from_env("LUA_PATH", &path), path_from_env("LUA_CPATH", &cpath))
    } else {
        (path.into_bytes(), cpath.into_bytes())
    };
    package.set("path", lua.create_string(path)?)?;
    package.set("cpath", lua.create_string(cpath)?)?;
    Ok(())
}

/// The `package.path` a session or run would have here (`LUA_PATH_5_4`, `LUA_PATH`, the defaults):
/// where the language server looks for `require`d modules besides the workspace.
pub fn lua_path() -> String {
    String::from_utf8_lossy(&path_from_env("LUA_PATH", &default_paths().0)).into_owned()
}

/// Debian's multiarch directory name for this machine.
fn multiarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "x86" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "loongarch64" => "loongarch64-linux-gnu",
        other => other,
    }
}

/// `package.path` and `package.cpath` defaults of Debian's `lua5.4`.
fn default_paths() -> (String, String) {
    let path = "/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;\
                /usr/local/lib/lua/5.4/?.lua;/usr/local/lib/lua/5.4/?/init.lua;\
                /usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua"
        .to_string();
    let cpath = format!(
        "/usr/local/lib/lua/5.4/?.so;/usr/lib/{}/lua/5.4/?.so;/usr/lib/lua/5.4/?.so;\
         /usr/local/lib/lua/5.4/loadall.so;./?.so",
        multiarch()
    );
    (path, cpath)
}

/// The value of a path variable (`LUA_PATH_5_4`, else `LUA_PATH`), with its first `;;` replaced by
/// the default; the default alone when neither is set.
fn path_from_env(var: &str, default: &str) -> Vec<u8> {
    let value = std::env::var_os(format!("{var}_5_4")).or_else(|| std::env::var_os(var));
    let Some(value) = value else { return default.as_bytes().to_vec() };
    let v = value.as_bytes();
    let Some(at) = v.windows(2).position(|w| w == b";;") else { return v.to_vec() };
    let mut out = Vec::new();
    if at > 0 {
        out.extend_from_slice(&v[..at]);
        out.push(b';');
    }
    out.extend_from_slice(default.as_bytes());
    if at + 2 < v.len() {
        out.push(b';');
        out.extend_from_slice(&v[at + 2..]);
    }
    out
}
