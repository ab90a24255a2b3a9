//! Prints how long the analysis takes on a file of about 5,000 lines built from Penlight's modules
//! (each wrapped in `do ... end`). Asserts only that the file parses; timings are for reading
//! (`cargo test --test analysis_speed -- --nocapture`), never asserted.

use llmspell::analysis::{complete, diagnostics, NoWorld, SourceFile};
use std::time::Instant;

#[test]
fn a_five_thousand_line_file_is_analysed() {
    let Ok(dir) = std::fs::read_dir("/usr/share/lua/5.1/pl") else {
        return eprintln!("skipped: lua-penlight is not installed");
    };
    let mut paths: Vec<_> =
        dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "lua")).collect();
    paths.sort();
    let mut text = String::new();
    for p in paths {
        if text.lines().count() >= 5_000 {
            break;
        }
        text.push_str(&format!("do\n{}\nend\n", std::fs::read_to_string(p).unwrap_or_default()));
    }
    let t = Instant::now();
    let file = SourceFile::parse(&text);
    let parsed = t.elapsed();
    assert_eq!(file.first_syntax_error(), None);
    let t = Instant::now();
    let diags = diagnostics(&file, &NoWorld);
    let linted = t.elapsed();
    let t = Instant::now();
    let n = complete(&file, text.len() / 2, &NoWorld).len();
    eprintln!(
        "{} lines: parse+resolve {parsed:?}, diagnostics {linted:?} ({} warnings), completion {:?} ({n} items)",
        text.lines().count(),
        diags.len(),
        t.elapsed()
    );
}
