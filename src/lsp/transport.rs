//! LSP's framing on a byte stream: `Content-Length: N\r\n\r\n` then N bytes of JSON. We frame and
//! parse ourselves (not lsp-server's reader, which ends the connection on a malformed message): a
//! message that is not JSON is reported to the caller, who answers it with -32700 and reads on.

use serde_json::Value;
use std::io::{BufRead, Read, Write};

/// A body larger than this is skipped (and answered as a parse error) instead of being held.
pub const MAX_BODY: usize = 256 << 20;
/// A header line longer than this is garbage, not a header.
const MAX_HEADER_LINE: usize = 4096;

/// One thing read from the stream.
#[derive(Debug)]
pub enum Incoming {
    Message(Value),
    /// A frame whose body is not a JSON object (or too big): the reason.
    Malformed(String),
    /// The stream has ended (or failed).
    End,
}

/// Reads the next frame. Headers other than Content-Length are ignored; a header block without a
/// length, or a body that is not JSON, gives `Malformed` and the stream stays usable.
pub fn read<R: BufRead>(input: &mut R) -> Incoming {
    let mut length: Option<usize> = None;
    let mut saw_header = false;
    loop {
        let mut line = Vec::new();
        match <&mut R as Read>::take(&mut *input, MAX_HEADER_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Incoming::End,
            Ok(_) => {}
        }
        if line.len() >= MAX_HEADER_LINE && !line.ends_with(b"\n") {
            skip_line(input);
            return Incoming::Malformed("a header line is too long".into());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if !saw_header {
                continue; // stray blank lines between frames
            }
            break;
        }
        saw_header = true;
        if let Some((name, value)) = text.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    let Some(length) = length else { return Incoming::Malformed("no valid Content-Length header".into()) };
    if length > MAX_BODY {
        let skipped =
            std::io::copy(&mut <&mut R as Read>::take(&mut *input, length as u64), &mut std::io::sink());
        return match skipped {
            Ok(n) if n == length as u64 => {
                Incoming::Malformed(format!("a message of {length} bytes is too big"))
            }
            _ => Incoming::End,
        };
    }
    let mut body = vec![0u8; length];
    if input.read_exact(&mut body).is_err() {
        return Incoming::End;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.is_object() => Incoming::Message(v),
        Ok(_) => Incoming::Malformed("a message must be a JSON object".into()),
        Err(e) => Incoming::Malformed(format!("not JSON: {e}")),
    }
}

fn skip_line<R: BufRead>(input: &mut R) {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match <&mut R as Read>::take(&mut *input, MAX_HEADER_LINE as u64).read_until(b'\n', &mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) if sink.ends_with(b"\n") => return,
            Ok(_) => {}
        }
    }
}

/// Writes one message in a frame and flushes it.
pub fn write(out: &mut impl Write, message: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    write!(out, "Content-Length: {}\r\n\r\n", body.len())?;
    out.write_all(&body)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn reads_frames_and_survives_bad_ones() {
        let stream = frame("{\"a\":1}")
            + &frame("{not json")
            + "X-Other: 1\r\n\r\n"
            + &frame("[1]")
            + "Content-Type: utf-8\r\n"
            + &frame("{\"b\":2}");
        let mut input = std::io::Cursor::new(stream.into_bytes());
        assert!(matches!(read(&mut input), Incoming::Message(v) if v["a"] == 1));
        assert!(matches!(read(&mut input), Incoming::Malformed(m) if m.starts_with("not JSON")));
        assert!(matches!(read(&mut input), Incoming::Malformed(m) if m.contains("Content-Length")));
        assert!(matches!(read(&mut input), Incoming::Malformed(m) if m.contains("object")));
        assert!(matches!(read(&mut input), Incoming::Message(v) if v["b"] == 2));
        assert!(matches!(read(&mut input), Incoming::End));
    }

    #[test]
    fn a_truncated_body_ends_the_stream() {
        let mut input = std::io::Cursor::new(b"Content-Length: 10\r\n\r\n{}".to_vec());
        assert!(matches!(read(&mut input), Incoming::End));
    }

    #[test]
    fn writes_a_frame() {
        let mut out = Vec::new();
        write(&mut out, &serde_json::json!({"x": 1})).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Content-Length: 7\r\n\r\n{\"x\":1}");
    }
}
