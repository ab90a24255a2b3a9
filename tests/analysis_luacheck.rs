//! The analysis's undefined-global (W113) and unused-local (W211) warnings agree with luacheck's on
//! code nobody here wrote: the Lua files of Debian's lua-penlight, lua-busted, lua-luassert and
//! lua-ldoc, each checked alone (`luacheck --no-config --std lua54 --allow-defined`, an empty world).
//! Precision and recall must be at least 0.9 for each code and for both together. With `CI` set a
//! missing luacheck or corpus is a failure (.ci/run installs them); otherwise the test says so and
//! passes.

use llmspell::analysis::{diagnostics, stdlib, NoWorld, SourceFile};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGES: &[&str] = &["lua-penlight", "lua-busted", "lua-luassert", "lua-ldoc"];

/// (file, line, column, code, name) of one warning.
type Warning = (String, usize, usize, String, String);

fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} (apt-get install lua-check {})", PACKAGES.join(" "));
    }
    eprintln!("skipped: {what}");
}

/// The corpus: every .lua file the packages install, each real file once; or, when
/// `ANALYSIS_CORPUS_DIRS` is set (colon-separated directories), every .lua file under those.
fn corpus() -> Option<Vec<PathBuf>> {
    let mut files = BTreeSet::new();
    if let Some(dirs) = std::env::var_os("ANALYSIS_CORPUS_DIRS") {
        std::env::split_paths(&dirs).for_each(|d| walk(&d, &mut files));
        return (!files.is_empty()).then(|| files.into_iter().collect());
    }
    for p in PACKAGES {
        let out = Command::new("dpkg").args(["-L", p]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.ends_with(".lua") && Path::new(line).is_file() {
                files.insert(std::fs::canonicalize(line).ok()?);
            }
        }
    }
    (!files.is_empty()).then(|| files.into_iter().collect())
}

fn walk(dir: &Path, files: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "lua") {
            files.extend(std::fs::canonicalize(&p).ok());
        }
    }
}

/// luacheck's W113 and W211, each file checked by its own run (one run over many files lets an
/// inline option of one file leak into others).
fn luacheck(files: &[PathBuf]) -> Option<BTreeSet<Warning>> {
    let mut set = BTreeSet::new();
    for f in files {
        let out = Command::new("luacheck")
            .args(["--no-config", "--codes", "--formatter", "plain", "--std", "lua54", "--allow-defined"])
            .arg(f)
            .output()
            .ok()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            set.extend(parse_warning(line));
        }
    }
    Some(set)
}

/// `path:line:col: (W113) accessing undefined variable 'name'`, for W113 and W211 only.
fn parse_warning(line: &str) -> Option<Warning> {
    let (loc, rest) = line.split_once(": (")?;
    let mut parts = loc.rsplitn(3, ':');
    let (col, ln, path) = (parts.next()?, parts.next()?, parts.next()?);
    let code = rest.get(..4)?;
    if code != "W113" && code != "W211" {
        return None;
    }
    let name = rest.split('\'').nth(1).unwrap_or("").to_string();
    // The kernel defines these globals itself, so the analysis rightly does not report them.
    if code == "W113" && stdlib::KERNEL_GLOBALS.contains(&name.as_str()) {
        return None;
    }
    Some((path.to_string(), ln.parse().ok()?, col.parse().ok()?, code.to_string(), name))
}

fn ours(files: &[PathBuf]) -> BTreeSet<Warning> {
    let mut set = BTreeSet::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let file = SourceFile::parse(&text);
        for d in diagnostics(&file, &NoWorld) {
            let before = &text[..d.range.start];
            let line = before.matches('\n').count() + 1;
            let col = d.range.start - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let name = d.message.split('\'').nth(1).unwrap_or("").to_string();
            set.insert((f.display().to_string(), line, col, d.code.to_string(), name));
        }
    }
    set
}

fn score(code: Option<&str>, expected: &BTreeSet<Warning>, got: &BTreeSet<Warning>) -> (f64, f64, usize) {
    let pick = |s: &BTreeSet<Warning>| -> BTreeSet<Warning> {
        s.iter().filter(|w| code.is_none_or(|c| w.3 == c)).cloned().collect()
    };
    let (e, g) = (pick(expected), pick(got));
    let hits = e.intersection(&g).count();
    let precision = if g.is_empty() { 1.0 } else { hits as f64 / g.len() as f64 };
    let recall = if e.is_empty() { 1.0 } else { hits as f64 / e.len() as f64 };
    (precision, recall, e.len())
}

#[test]
fn undefined_globals_and_unused_locals_agree_with_luacheck() {
    let Some(files) = corpus() else { return missing("the Debian Lua corpus is not installed") };
    if Command::new("luacheck").arg("--version").output().is_err() {
        return missing("luacheck is not installed");
    }
    let Some(expected) = luacheck(&files) else { return missing("luacheck could not be run") };
    let got = ours(&files);
    let mut failed = false;
    for code in [Some("W113"), Some("W211"), None] {
        let (p, r, n) = score(code, &expected, &got);
        eprintln!(
            "{}: precision {p:.4} recall {r:.4} ({n} luacheck warnings, {} files)",
            code.unwrap_or("both"),
            files.len()
        );
        failed |= p < 0.9 || r < 0.9;
    }
    let missed: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    eprintln!("missed ({}):", missed.len());
    missed.iter().take(60).for_each(|w| eprintln!("  {w:?}"));
    eprintln!("not reported by luacheck ({}):", extra.len());
    extra.iter().take(60).for_each(|w| eprintln!("  {w:?}"));
    assert!(!failed, "the analysis disagrees with luacheck (see above)");
}
