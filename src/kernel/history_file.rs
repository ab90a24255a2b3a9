//! The history file: every cell a kernel stored in history, one JSON line each, appended with a
//! single write (a crash loses at most the line being written).
//! `$LLMSPELL_HOME/kernel-history/<name>.jsonl` (`history` there is the REPL's line-editing file),
//! named for the kernel, so a kernel restarted under the same name (Jupyter's restart keeps the
//! connection file) finds its past again. Reading skips what it cannot parse: a line torn by a
//! crash, or damage from elsewhere.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The longest line read back: more than the largest message a kernel accepts by default.
const MAX_LINE_BYTES: u64 = 128 << 20;

/// One stored cell. `output` (a short preview of the result) lives only in memory: it is never
/// written, as IPython does not log outputs by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) session: u64,
    pub(super) line: u64,
    pub(super) input: String,
    #[serde(skip)]
    pub(super) output: Option<String>,
}

/// The history file we append to. It is opened for each append and closed again: a kernel that
/// lives for weeks holds no descriptor in the user's home (which may be unmounted or replaced).
pub(super) struct HistoryFile {
    path: PathBuf,
    /// The file does not end with a newline (a torn last line): the next append starts one, so
    /// the torn line stays apart from the good one.
    needs_newline: bool,
}

/// What a scan of the file found.
#[derive(Default)]
pub(super) struct ScanSummary {
    pub(super) last_session: u64,
    pub(super) skipped: u64,
}

/// `$LLMSPELL_HOME/kernel-history/<name>.jsonl`; a name that is not a plain file name is made one.
pub(super) fn path_for(home: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') { format!("_{safe}") } else { safe };
    home.join("kernel-history").join(format!("{safe}.jsonl"))
}

impl HistoryFile {
    /// Opens (creating it 0600, in a 0700 directory) the file to append to. Its contents are read
    /// separately (`scan`).
    pub(super) fn open(path: &Path) -> Result<HistoryFile, String> {
        let dir = crate::private_files::parent_dir(path);
        crate::private_files::make_private_dir(dir)?;
        let mut file = open_regular(path)?;
        let needs_newline = ends_without_newline(&mut file, path)?;
        Ok(HistoryFile { path: path.to_path_buf(), needs_newline })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry as one line, with a single write.
    pub(super) fn append(&mut self, entry: &Entry) -> Result<(), String> {
        let mut line = Vec::with_capacity(entry.input.len() + 64);
        if self.needs_newline {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, entry).expect("a history entry serialises");
        line.push(b'\n');
        let mut file = open_regular(&self.path)?;
        file.write_all(&line).map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.needs_newline = false;
        Ok(())
    }
}

/// Opens the file for appending (creating it 0600); a device or a pipe there (/dev/full, a FIFO)
/// could be read forever, so only a regular file is accepted.
fn open_regular(path: &Path) -> Result<File, String> {
    let file = crate::private_files::open_append(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(file)
}

/// Whether a non-empty file lacks its final newline.
fn ends_without_newline(file: &mut File, path: &Path) -> Result<bool, String> {
    let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let len = file.seek(SeekFrom::End(0)).map_err(err)?;
    if len == 0 {
        return Ok(false);
    }
    // The file was opened for appending only: read its last byte through a second handle.
    let mut reader = File::open(path).map_err(err)?;
    reader.seek(SeekFrom::Start(len - 1)).map_err(err)?;
    let mut last = [0u8];
    reader.read_exact(&mut last).map_err(err)?;
    Ok(last[0] != b'\n')
}

/// Reads every entry in file order, handing each to `each`; lines that do not parse are skipped
/// (and counted). A missing file is an empty history.
pub(super) fn scan(path: &Path, each: impl FnMut(Entry)) -> Result<ScanSummary, String> {
    scan_last(path, u64::MAX, each)
}

/// Like `scan`, over the file's last `bytes` only (from the first whole line in them): what a
/// kernel start reads, so a history of years costs it no more than one of days. Sessions only grow
/// along the file, so the last ones hold the highest.
pub(super) fn scan_last(path: &Path, bytes: u64, mut each: impl FnMut(Entry)) -> Result<ScanSummary, String> {
    let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ScanSummary::default()),
        Err(e) => return Err(err(e)),
    };
    let start = file.metadata().map_err(err)?.len().saturating_sub(bytes);
    file.seek(SeekFrom::Start(start)).map_err(err)?;
    let mut reader = BufReader::new(file);
    if start > 0 {
        skip_line(&mut reader).map_err(err)?; // the rest of a line that began before
    }
    read_entries(reader, MAX_LINE_BYTES, &mut each).map_err(err)
}

/// The entries of a history file's bytes; lines longer than `max_line` are skipped unread.
fn read_entries(
    mut reader: impl BufRead,
    max_line: u64,
    each: &mut impl FnMut(Entry),
) -> std::io::Result<ScanSummary> {
    let mut summary = ScanSummary::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line longer than any cell could be (damage, not history) is skipped, not held.
        if reader.by_ref().take(max_line).read_until(b'\n', &mut line)? == 0 {
            return Ok(summary);
        }
        if line.len() as u64 == max_line && line.last() != Some(&b'\n') {
            skip_line(&mut reader)?;
            summary.skipped += 1;
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(text) {
            Ok(entry) => {
                summary.last_session = summary.last_session.max(entry.session);
                each(entry);
            }
            Err(_) => summary.skipped += 1,
        }
    }
}

/// Reads past the rest of the current line.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session: u64, line: u64, input: &str) -> Entry {
        Entry { session, line, input: input.into(), output: Some("not written".into()) }
    }

    fn read_all(path: &Path) -> (Vec<Entry>, ScanSummary) {
        let mut entries = Vec::new();
        let summary = scan(path, |e| entries.push(e)).unwrap();
        (entries, summary)
    }

    #[test]
    fn entries_round_trip_without_their_output() {
        let dir = tempdir();
        let path = path_for(&dir, "kernel-1");
        let mut file = HistoryFile::open(&path).unwrap();
        file.append(&entry(1, 1, "x = 1")).unwrap();
        file.append(&entry(1, 2, "print(\"a\\nb\")\n-- two lines")).unwrap();
        let (entries, summary) = read_all(&path);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].input, "print(\"a\\nb\")\n-- two lines");
        assert_eq!(entries[0].output, None);
        assert_eq!((summary.last_session, summary.skipped), (1, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_torn_last_line_and_garbage_are_skipped_and_the_next_append_stays_whole() {
        let dir = tempdir();
        let path = path_for(&dir, "k");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "{\"session\":4,\"line\":1,\"input\":\"a\"}\nnot json\n\u{0}\u{1}\n{\"session\":5,\"li",
        )
        .unwrap();
        let mut file = HistoryFile::open(&path).unwrap();
        file.append(&entry(6, 1, "b")).unwrap();
        let (entries, summary) = read_all(&path);
        assert_eq!(entries.iter().map(|e| e.input.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((summary.last_session, summary.skipped), (6, 3));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_held() {
        let bytes = format!("{}\n{{\"session\":1,\"line\":2,\"input\":\"b\"}}\n", "x".repeat(100));
        let mut entries = Vec::new();
        let summary = read_entries(bytes.as_bytes(), 40, &mut |e| entries.push(e)).unwrap();
        assert_eq!((entries.len(), summary.skipped), (1, 1));
        assert_eq!(entries[0].input, "b");
    }

    #[test]
    fn a_start_reads_only_the_end_of_the_file() {
        let dir = tempdir();
        let path = path_for(&dir, "k");
        let mut file = HistoryFile::open(&path).unwrap();
        for line in 1..=100 {
            file.append(&entry(line / 10 + 1, line, &format!("cell {line:03}"))).unwrap();
        }
        let mut entries = Vec::new();
        let summary = scan_last(&path, 200, |e| entries.push(e)).unwrap();
        assert!((3..=5).contains(&entries.len()), "{}", entries.len());
        assert_eq!(entries.last().unwrap().input, "cell 100");
        assert_eq!((summary.last_session, summary.skipped), (11, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_device_is_not_a_history_file() {
        let err = HistoryFile::open(Path::new("/dev/full")).err().unwrap();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn names_become_plain_file_names() {
        let home = Path::new("/h");
        assert_eq!(path_for(home, "kernel-ab12"), Path::new("/h/kernel-history/kernel-ab12.jsonl"));
        assert_eq!(path_for(home, "../x"), Path::new("/h/kernel-history/_.._x.jsonl"));
        assert_eq!(path_for(home, ""), Path::new("/h/kernel-history/_.jsonl"));
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llmspell-history-{}", crate::wire::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
