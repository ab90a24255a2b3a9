//! The documents the editor has open: their text (full or incremental sync), the analysis' parse of
//! it, and the conversion between LSP positions (line + UTF-16 or UTF-8 column) and byte offsets.

use crate::analysis::SourceFile;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ops::Range;

/// How the client counts columns (`positionEncoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf16,
    Utf8,
}

pub struct Document {
    pub version: i64,
    pub file: SourceFile,
    /// Byte offset of each line's start.
    lines: Vec<usize>,
}

impl Document {
    pub fn new(text: &str, version: i64) -> Document {
        Document { version, file: SourceFile::parse(text), lines: line_starts(text) }
    }

    pub fn text(&self) -> &str {
        self.file.text()
    }

    /// The byte offset of an LSP position; positions past a line's end clamp to it, past the text's
    /// end to the end.
    pub fn offset(&self, position: &Value, enc: Encoding) -> usize {
        offset_at(&self.lines, self.text(), position, enc)
    }

    /// The LSP position of a byte offset (clamped to the text, moved back to a character boundary).
    pub fn position(&self, offset: usize, enc: Encoding) -> Value {
        let text = self.text();
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.lines.partition_point(|&s| s <= offset).saturating_sub(1);
        let before = &text[self.lines[line]..offset];
        let character = match enc {
            Encoding::Utf16 => before.encode_utf16().count(),
            Encoding::Utf8 => before.len(),
        };
        json!({ "line": line, "character": character })
    }

    pub fn range(&self, r: &Range<usize>, enc: Encoding) -> Value {
        json!({ "start": self.position(r.start, enc), "end": self.position(r.end, enc) })
    }

    /// Byte range of line `line` (0-based) without its line break; None past the end.
    pub fn line_range(&self, line: usize) -> Option<Range<usize>> {
        let start = *self.lines.get(line)?;
        let text = self.text();
        let end = self.lines.get(line + 1).copied().unwrap_or(text.len());
        let trimmed = text[start..end].trim_end_matches(['\n', '\r']).len();
        Some(start..start + trimmed)
    }

    /// Applies `didChange`'s content changes in order (a change without a range replaces the text),
    /// then parses once.
    pub fn apply(&mut self, changes: &[Value], version: i64, enc: Encoding) {
        let mut text = self.text().to_string();
        for change in changes {
            let Some(new) = change["text"].as_str() else { continue };
            match change.get("range").filter(|r| r.is_object()) {
                None => text = new.to_string(),
                Some(range) => {
                    // Positions refer to the text as the previous changes left it.
                    let lines = line_starts(&text);
                    let start = offset_at(&lines, &text, &range["start"], enc);
                    let end = offset_at(&lines, &text, &range["end"], enc).max(start);
                    text.replace_range(start..end, new);
                }
            }
        }
        *self = Document::new(&text, version);
    }
}

/// The byte offset of an LSP position in `text` whose line starts are `lines`.
fn offset_at(lines: &[usize], text: &str, position: &Value, enc: Encoding) -> usize {
    let line = position["line"].as_u64().unwrap_or(0) as usize;
    let column = position["character"].as_u64().unwrap_or(0) as usize;
    let Some(&start) = lines.get(line) else { return text.len() };
    let end = lines.get(line + 1).copied().unwrap_or(text.len());
    let mut units = 0;
    for (i, c) in text[start..end].char_indices() {
        if units >= column || c == '\n' || c == '\r' {
            return start + i;
        }
        units += match enc {
            Encoding::Utf16 => c.len_utf16(),
            Encoding::Utf8 => c.len_utf8(),
        };
    }
    end
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

/// The open documents by URI.
#[derive(Default)]
pub struct Documents {
    pub open: HashMap<String, Document>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u64, character: u64) -> Value {
        json!({ "line": line, "character": character })
    }

    #[test]
    fn utf16_and_utf8_columns_map_to_bytes_and_back() {
        let d = Document::new("a = '😀é'\nb", 1);
        // 😀 is 2 UTF-16 units and 4 bytes (5..9); é 1 unit and 2 bytes (9..11).
        assert_eq!(d.offset(&pos(0, 7), Encoding::Utf16), 9);
        assert_eq!(d.offset(&pos(0, 8), Encoding::Utf16), 11);
        assert_eq!(d.offset(&pos(0, 11), Encoding::Utf8), 11);
        assert_eq!(d.position(11, Encoding::Utf16), pos(0, 8));
        assert_eq!(d.position(11, Encoding::Utf8), pos(0, 11));
        assert_eq!(d.position(7, Encoding::Utf16), pos(0, 5), "inside a character: its start");
        assert_eq!(d.offset(&pos(1, 0), Encoding::Utf16), 13);
        assert_eq!(d.offset(&pos(0, 99), Encoding::Utf16), 12, "clamped to the line's end");
        assert_eq!(d.offset(&pos(9, 0), Encoding::Utf16), 14, "past the end: the end");
    }

    #[test]
    fn incremental_changes_apply_in_order() {
        let mut d = Document::new("local x = 1\nprint(x)\n", 1);
        let changes = [
            json!({ "range": { "start": pos(0, 6), "end": pos(0, 7) }, "text": "why" }),
            json!({ "range": { "start": pos(1, 6), "end": pos(1, 7) }, "text": "why" }),
            json!({ "range": { "start": pos(2, 0), "end": pos(2, 0) }, "text": "-- é\n" }),
        ];
        d.apply(&changes, 2, Encoding::Utf16);
        assert_eq!(d.text(), "local why = 1\nprint(why)\n-- é\n");
        d.apply(&[json!({ "text": "whole" })], 3, Encoding::Utf16);
        assert_eq!((d.text(), d.version), ("whole", 3));
    }
}
