//! The runner socket's messages (a unix stream socket, 0600 in the 0700 kernels directory).
//!
//! client → zygote, once: `b"LSR3"`, u32 length, then the request body; the first `sendmsg` also
//! carries the caller's fds 0, 1, 2 (SCM_RIGHTS). Body: list argv (the run's `arg` from its most
//! negative entry: the interpreter, then lua's command line), u32 index in argv of lua's first
//! option or the script (may be argv's length), bytes cwd, list environment ("K=V"), u32 umask,
//! bytes program (the name lua's messages start with). A list is a u32 count of byte strings; a byte
//! string is a u32 length and the bytes. Integers are little-endian.
//! client → zygote, while it runs: `b'S'`, one byte signal number (forward this signal).
//! zygote → client: `b'X'`, one byte kind (0: exited, 1: killed by a signal), i32 code or signal;
//! or `b'E'`, u32 length, a message (the run could not start). Then the zygote closes.

pub const MAGIC: &[u8; 4] = b"LSR3";
/// Requests larger than this are refused (argv plus environment).
pub const MAX_REQUEST: usize = 64 << 20;

#[derive(Debug, Default, Clone)]
pub struct Request {
    /// `arg` from its most negative index on: the interpreter to run again (an llmspell binary's
    /// absolute path), then lua's options, the script and its arguments.
    pub argv: Vec<Vec<u8>>,
    pub first_arg: u32,
    pub cwd: Vec<u8>,
    pub env: Vec<Vec<u8>>,
    pub umask: u32,
    /// lua's progname: the caller's argv[0] as typed, which begins error messages.
    pub program: Vec<u8>,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_list(out: &mut Vec<u8>, l: &[Vec<u8>]) {
    put_u32(out, l.len() as u32);
    for b in l {
        put_bytes(out, b);
    }
}

impl Request {
    /// The whole message: magic, length, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_list(&mut body, &self.argv);
        put_u32(&mut body, self.first_arg);
        put_bytes(&mut body, &self.cwd);
        put_list(&mut body, &self.env);
        put_u32(&mut body, self.umask);
        put_bytes(&mut body, &self.program);
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, body.len() as u32);
        out.extend_from_slice(&body);
        out
    }

    /// Parses a body (after magic and length).
    pub fn decode(body: &[u8]) -> Option<Request> {
        let mut r = Reader { b: body, at: 0 };
        let req = Request {
            argv: r.list()?,
            first_arg: r.u32()?,
            cwd: r.bytes()?.to_vec(),
            env: r.list()?,
            umask: r.u32()?,
            program: r.bytes()?.to_vec(),
        };
        (r.at == body.len() && (req.first_arg as usize) <= req.argv.len() && req.first_arg > 0).then_some(req)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes(s.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn list(&mut self) -> Option<Vec<Vec<u8>>> {
        let n = self.u32()? as usize;
        let mut out = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            out.push(self.bytes()?.to_vec());
        }
        Some(out)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Signaled(i32),
}

pub fn encode_end(end: End) -> [u8; 6] {
    let (kind, v) = match end {
        End::Exited(c) => (0u8, c),
        End::Signaled(s) => (1u8, s),
    };
    let mut out = [0u8; 6];
    out[0] = b'X';
    out[1] = kind;
    out[2..].copy_from_slice(&v.to_le_bytes());
    out
}

pub fn encode_error(msg: &str) -> Vec<u8> {
    let mut out = vec![b'E'];
    put_bytes(&mut out, msg.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = Request {
            argv: vec![b"/bin/llmspell".to_vec(), b"-e".to_vec(), b"s.lua".to_vec(), b"\xff".to_vec()],
            first_arg: 1,
            cwd: b"/tmp".to_vec(),
            env: vec![b"A=1".to_vec(), b"B=\xfe".to_vec()],
            umask: 0o22,
            program: b"llmspell".to_vec(),
        };
        let e = r.encode();
        assert_eq!(&e[..4], MAGIC);
        let d = Request::decode(&e[8..]).unwrap();
        assert_eq!(d.argv, r.argv);
        assert_eq!((d.first_arg, d.program.as_slice()), (1, b"llmspell".as_slice()));
        assert_eq!(d.env, r.env);
        assert_eq!(d.umask, 0o22);
        assert!(Request::decode(&e[8..e.len() - 1]).is_none());
    }
}
