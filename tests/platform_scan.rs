//! Linux-only facilities are named only in files whose path says `linux` (src/sys/linux.rs), so the
//! POSIX backend, which macOS and FreeBSD build, cannot come to use one by accident: a file anywhere
//! else under src/ that names one fails this test, comments included (a comment that names one is a
//! sign the code near it depends on it).

use std::path::{Path, PathBuf};

/// Split so that this file, outside src/, does not read as a use either.
const FORBIDDEN: &[&str] = &[
    "timer|fd",
    "event|fd",
    "signal|fd",
    "pid|fd",
    "mem|fd",
    "e|poll",
    "pr|ctl",
    "PR_SET_PDEATH|SIG",
    "accept|4",
    "pipe|2",
    "SOCK_|CLOEXEC",
    "MSG_CMSG_|CLOEXEC",
    "SIGRT|MIN",
    "SIGRT|MAX",
    "clear|env",
    "get|random",
    "close_|range",
    "TCP_QUICK|ACK",
    "SFD_|",
    "TFD_|",
    "EFD_|",
    "MFD_|",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The facilities `text` names: the identifiers above, and the /proc file system (a path that
/// starts with it, not a word such as "/process").
fn named(text: &str) -> Vec<String> {
    let mut found: Vec<String> =
        FORBIDDEN.iter().map(|f| f.replace('|', "")).filter(|f| text.contains(f.as_str())).collect();
    let proc_fs = ["/", "proc"].concat();
    let mut at = 0;
    while let Some(i) = text[at..].find(&proc_fs) {
        let next = text[at + i + proc_fs.len()..].chars().next();
        if !next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            found.push(proc_fs.clone());
            break;
        }
        at += i + proc_fs.len();
    }
    found
}

#[test]
fn linux_only_facilities_are_named_only_in_linux_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel.to_string_lossy().contains("linux") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let names = named(&text);
        if !names.is_empty() {
            offenders.push(format!("src/{}: {}", rel.display(), names.join(", ")));
        }
    }
    assert!(
        offenders.is_empty(),
        "Linux-only facilities outside src/sys/linux* (use the platform layer, src/sys/):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_sees_what_it_looks_for() {
    assert_eq!(named(&["let fd = libc::event", "fd(0, 0);"].concat()), ["eventfd"]);
    assert_eq!(named(&["read(\"/", "proc/self/fd\")"].concat()), ["/proc"]);
    assert!(named("processproxies/processproxy.py and /process").is_empty());
    assert!(named("poll(fds) on a pipe").is_empty());
}
