//! `run` on a remote kernel. A local run hands the caller's fds, cwd and environment to a fresh
//! process; none of that can cross to another host. So the script's text and its arguments travel
//! as one cell that loads the script as its own chunk, with a fresh global table (`arg` set, reads
//! falling through to the session's globals, writes kept to itself) so a run leaves no globals
//! behind. It runs in the session's Lua state, not a fresh process: see README "Remote kernels".

/// The cell that runs `source` as `chunkname` with `args` (`arg[0]` is the script's name).
pub fn cell(chunkname: &str, source: &str, args: &[String]) -> String {
    // lua.c skips a first `#!` line; load() does not. Keep the newline so line numbers hold.
    let source = match source.strip_prefix('#') {
        Some(rest) => rest.find('\n').map_or("", |i| &rest[i..]),
        None => source,
    };
    let arg_list: Vec<String> = args.iter().map(|a| quote(a)).collect();
    format!(
        "do\n\
         local arg = {{ [0] = {name}, {args} }}\n\
         local env = setmetatable({{ arg = arg }}, {{ __index = _G }})\n\
         local chunk, err = load({src}, {chunk}, \"t\", env)\n\
         if not chunk then error(err, 0) end\n\
         chunk(table.unpack(arg, 1, {n}))\n\
         end",
        name = quote(chunkname),
        args = arg_list.join(", "),
        src = quote(source),
        chunk = quote(&format!("@{chunkname}")),
        n = args.len(),
    )
}

/// A Lua string literal for any text: quotes, backslashes and control bytes escaped (decimal
/// escapes take three digits so a following digit cannot join them).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_character() {
        assert_eq!(quote("a\"b\\c\nd\0"), "\"a\\\"b\\\\c\\nd\\000\"");
        assert_eq!(quote("é\t1"), "\"é\\0091\"");
    }

    #[test]
    fn a_shebang_line_is_dropped_but_its_line_kept() {
        let c = cell("s.lua", "#!/usr/bin/env llmspell run\nprint(1)", &["x".into()]);
        assert!(c.contains("load(\"\\nprint(1)\", \"@s.lua\""), "{c}");
        assert!(c.contains("[0] = \"s.lua\", \"x\""), "{c}");
    }
}
