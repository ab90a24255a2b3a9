//! The Jupyter wire message: multipart frames, HMAC-SHA256 signing and verification, ids and dates.
//!
//! A message on the wire is `[identities..., "<IDS|MSG>", signature, header, parent_header, metadata,
//! content, buffers...]`; the signature is the hex HMAC of the four JSON frames under the connection
//! key (no key: empty signature, no checking).

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

pub const DELIMITER: &[u8] = b"<IDS|MSG>";
pub const PROTOCOL_VERSION: &str = "5.5";

/// One decoded message.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub identities: Vec<Vec<u8>>,
    pub header: Value,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Vec<u8>>,
    /// The header frame as it arrived (empty for a message built here): replies echo it as their
    /// parent_header without serialising the header again.
    pub raw_header: Vec<u8>,
}

impl Message {
    pub fn msg_type(&self) -> &str {
        self.header["msg_type"].as_str().unwrap_or("")
    }
    pub fn msg_id(&self) -> &str {
        self.header["msg_id"].as_str().unwrap_or("")
    }
    pub fn parent_msg_id(&self) -> &str {
        self.parent_header["msg_id"].as_str().unwrap_or("")
    }
}

/// Why a multipart message was refused.
#[derive(Debug, PartialEq)]
pub enum WireError {
    NoDelimiter,
    TooFewFrames(usize),
    BadSignature,
    BadJson(&'static str),
    MissingField(&'static str),
    Replayed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            WireError::NoDelimiter => write!(f, "no <IDS|MSG> delimiter"),
            WireError::TooFewFrames(n) => write!(f, "{n} frames after the delimiter, need at least 5"),
            WireError::BadSignature => write!(f, "bad or missing HMAC signature"),
            WireError::BadJson(part) => write!(f, "{part} is not a JSON object"),
            WireError::MissingField(name) => write!(f, "header lacks a string {name}"),
            WireError::Replayed => write!(f, "replayed signature"),
        }
    }
}

/// Signs and verifies with the connection key; an empty key disables signing.
#[derive(Clone)]
pub struct Signer {
    mac: Option<Hmac<Sha256>>,
}

impl Signer {
    pub fn new(key: &str) -> Signer {
        let mac = if key.is_empty() {
            None
        } else {
            Some(Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length"))
        };
        Signer { mac }
    }

    fn digest(&self, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
        let mut mac = self.mac.clone()?;
        for p in parts {
            mac.update(p);
        }
        Some(mac)
    }

    /// Hex signature of the four JSON frames ("" without a key).
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        match self.digest(parts) {
            None => String::new(),
            Some(mac) => hex(&mac.finalize().into_bytes()),
        }
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> bool {
        let Some(mac) = self.digest(parts) else { return true };
        match unhex(signature) {
            Some(bytes) => mac.verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

/// Remembers recently seen signatures so a captured message cannot be replayed. Each is kept as 128
/// bits (the first half of an HMAC-SHA256 signature), not as its 64 hex characters: a kernel holds
/// `capacity` of them for good, and that is its largest fixed cost per request remembered.
pub struct ReplayGuard {
    seen: HashSet<u128>,
    order: VecDeque<u128>,
    capacity: usize,
}

/// 128 bits that stand for a signature: its first 32 hex digits, or a hash of other bytes.
fn signature_key(signature: &[u8]) -> u128 {
    let hex = signature.get(..32).and_then(|h| std::str::from_utf8(h).ok());
    if let Some(key) = hex.and_then(|h| u128::from_str_radix(h, 16).ok()) {
        return key;
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    signature.hash(&mut hasher);
    u128::from(hasher.finish())
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard { seen: HashSet::new(), order: VecDeque::new(), capacity }
    }
    /// True if the signature is new (and records it); false for a replay.
    pub fn check(&mut self, signature: &[u8]) -> bool {
        if signature.is_empty() {
            return true; // unsigned sessions have nothing to compare
        }
        let key = signature_key(signature);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Decodes and verifies a multipart message. Nothing is trusted before the signature checks.
pub fn decode(frames: Vec<Vec<u8>>, signer: &Signer) -> Result<Message, WireError> {
    let split = frames.iter().position(|f| f == DELIMITER).ok_or(WireError::NoDelimiter)?;
    let rest = frames.len() - split - 1;
    if rest < 5 {
        return Err(WireError::TooFewFrames(rest));
    }
    let mut frames = frames;
    let mut tail = frames.split_off(split);
    let identities = frames;
    tail.remove(0); // delimiter
    let buffers = tail.split_off(5);
    let [sig, header, parent, metadata, content]: [Vec<u8>; 5] = tail.try_into().expect("five frames");
    if !signer.verify(&sig, &[&header, &parent, &metadata, &content]) {
        return Err(WireError::BadSignature);
    }
    let object = |bytes: &[u8], part| match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(WireError::BadJson(part)),
    };
    let raw_header = header;
    let header = object(&raw_header, "header")?;
    for field in ["msg_id", "msg_type"] {
        if !header[field].is_string() {
            return Err(WireError::MissingField(if field == "msg_id" { "msg_id" } else { "msg_type" }));
        }
    }
    Ok(Message {
        identities,
        header,
        parent_header: object(&parent, "parent_header")?,
        metadata: object(&metadata, "metadata")?,
        content: object(&content, "content")?,
        buffers,
        raw_header,
    })
}

/// The frames of a message, signed. `identities` go first (ROUTER routing or an iopub topic).
pub fn encode(msg: &Message, signer: &Signer) -> Vec<Vec<u8>> {
    let json = |v: &Value| serde_json::to_vec(v).expect("JSON values serialise");
    let parts = [json(&msg.header), json(&msg.parent_header), json(&msg.metadata), json(&msg.content)];
    let mut frames = signed(msg.identities.clone(), signer, parts);
    frames.extend(msg.buffers.iter().cloned());
    frames
}

/// The frames of a reply or broadcast for `parent`: what `encode(&child(...))` gives, without building
/// a Message. Every message the kernel sends on a request's behalf goes through here, so it is lean:
/// the header is written straight from its fields and the parent's header frame is echoed as it
/// arrived.
pub fn encode_child(
    parent: &Message,
    msg_type: &str,
    session: &str,
    content: &Value,
    identities: Vec<Vec<u8>>,
    signer: &Signer,
) -> Vec<Vec<u8>> {
    let parent_json = if parent.raw_header.is_empty() {
        serde_json::to_vec(&parent.header).expect("JSON values serialise")
    } else {
        parent.raw_header.clone()
    };
    let mut content_json = Vec::with_capacity(256);
    serde_json::to_writer(&mut content_json, content).expect("JSON values serialise");
    signed(identities, signer, [header_json(msg_type, session), parent_json, b"{}".to_vec(), content_json])
}

fn signed(mut frames: Vec<Vec<u8>>, signer: &Signer, parts: [Vec<u8>; 4]) -> Vec<Vec<u8>> {
    let [header, parent, metadata, content] = parts;
    let sig = signer.sign(&[&header, &parent, &metadata, &content]);
    frames.reserve(6);
    frames.push(DELIMITER.to_vec());
    frames.push(sig.into_bytes());
    frames.extend([header, parent, metadata, content]);
    frames
}

/// A message header's fields, in the order the spec lists them.
#[derive(serde::Serialize)]
struct Header<'a> {
    msg_id: &'a str,
    session: &'a str,
    username: &'a str,
    date: &'a str,
    msg_type: &'a str,
    version: &'a str,
}

impl<'a> Header<'a> {
    fn new(msg_id: &'a str, session: &'a str, date: &'a str, msg_type: &'a str) -> Header<'a> {
        Header { msg_id, session, username: username(), date, msg_type, version: PROTOCOL_VERSION }
    }
}

fn header_json(msg_type: &str, session: &str) -> Vec<u8> {
    let (msg_id, date) = (new_id(), now_iso8601());
    let mut out = Vec::with_capacity(192);
    serde_json::to_writer(&mut out, &Header::new(&msg_id, session, &date, msg_type))
        .expect("a header serialises");
    out
}

/// A header for a new message of `msg_type` in `session`.
pub fn header(msg_type: &str, session: &str) -> Value {
    let (msg_id, date) = (new_id(), now_iso8601());
    serde_json::to_value(Header::new(&msg_id, session, &date, msg_type)).expect("a header serialises")
}

/// A reply or broadcast for `parent` (its header becomes the parent_header).
pub fn child(parent: &Message, msg_type: &str, session: &str, content: Value) -> Message {
    Message {
        header: header(msg_type, session),
        parent_header: parent.header.clone(),
        metadata: json!({}),
        content,
        ..Message::default()
    }
}

/// A unique message id: a random per-process prefix and a counter (cheaper than a UUID per message).
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| random_hex(8));
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `n` random bytes as hex, from the OS generator.
pub fn random_hex(n: usize) -> String {
    hex(&random_bytes(n))
}

/// `n` random bytes from the OS generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf
}

pub fn now_iso8601() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn username() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var("USER").unwrap_or_else(|_| "llmspell".into()))
}

/// Lower-case hex. (Not `write!("{:02x}")` per byte: signing every message made that a tenth of a
/// request's instructions.)
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend([DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            identities: vec![b"client-1".to_vec()],
            header: header("execute_request", "s1"),
            parent_header: json!({}),
            metadata: json!({}),
            content: json!({"code": "print(1)"}),
            buffers: vec![b"raw".to_vec()],
            ..Message::default()
        }
    }

    #[test]
    fn round_trip_keeps_identities_content_and_buffers() {
        let signer = Signer::new("secret");
        let frames = encode(&sample(), &signer);
        let back = decode(frames, &signer).unwrap();
        assert_eq!(back.identities, vec![b"client-1".to_vec()]);
        assert_eq!(back.content["code"], "print(1)");
        assert_eq!(back.buffers, vec![b"raw".to_vec()]);
        assert_eq!(back.msg_type(), "execute_request");
    }

    #[test]
    fn encode_child_echoes_the_parent_header_frame_and_matches_encode_of_child() {
        let signer = Signer::new("secret");
        let sent = encode(&sample(), &signer);
        let request = decode(sent.clone(), &signer).unwrap();
        let content = json!({"status": "ok", "execution_count": 3});
        let frames = encode_child(&request, "execute_reply", "s2", &content, vec![b"id".to_vec()], &signer);
        assert_eq!(frames[0], b"id", "identities first");
        assert_eq!(frames[4], sent[3], "parent_header is the request's header frame as sent");
        let reply = decode(frames, &signer).unwrap();
        let built = child(&request, "execute_reply", "s2", content.clone());
        assert_eq!(reply.parent_header, built.parent_header);
        assert_eq!(reply.content, content);
        assert_eq!(reply.metadata, json!({}));
        for field in ["session", "username", "msg_type", "version"] {
            assert_eq!(reply.header[field], built.header[field], "{field}");
        }
        assert_ne!(reply.msg_id(), built.msg_id());
        // A parent built here (no frame to echo) is serialised instead.
        let local = sample();
        let frames = encode_child(&local, "status", "s2", &json!({}), vec![], &signer);
        assert_eq!(decode(frames, &signer).unwrap().parent_header, local.header);
    }

    #[test]
    fn signature_matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = Signer::new("Jefe");
        assert_eq!(
            s.sign(&[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn wrong_key_tampered_content_and_missing_signature_are_refused() {
        let frames = encode(&sample(), &Signer::new("secret"));
        assert_eq!(decode(frames.clone(), &Signer::new("other")).unwrap_err(), WireError::BadSignature);
        let mut tampered = frames.clone();
        *tampered.last_mut().unwrap() = b"x".to_vec(); // buffers are not signed: still fine
        assert!(decode(tampered, &Signer::new("secret")).is_ok());
        let mut tampered = frames.clone();
        tampered[6] = br#"{"code":"os.exit()"}"#.to_vec();
        assert_eq!(decode(tampered, &Signer::new("secret")).unwrap_err(), WireError::BadSignature);
        let mut unsigned = frames;
        unsigned[2] = Vec::new();
        assert_eq!(decode(unsigned, &Signer::new("secret")).unwrap_err(), WireError::BadSignature);
    }

    #[test]
    fn empty_key_means_no_signing() {
        let frames = encode(&sample(), &Signer::new(""));
        assert!(frames[2].is_empty());
        assert!(decode(frames, &Signer::new("")).is_ok());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let s = Signer::new("");
        assert_eq!(decode(vec![b"a".to_vec()], &s).unwrap_err(), WireError::NoDelimiter);
        assert_eq!(
            decode(vec![DELIMITER.to_vec(), b"".to_vec()], &s).unwrap_err(),
            WireError::TooFewFrames(1)
        );
        let mut f = encode(&sample(), &s);
        f[3] = b"\xff\xfe not json".to_vec();
        assert_eq!(decode(f, &s).unwrap_err(), WireError::BadJson("header"));
        let mut f = encode(&sample(), &s);
        f[3] = br#"{"msg_id": 5, "msg_type": "x"}"#.to_vec();
        assert_eq!(decode(f, &s).unwrap_err(), WireError::MissingField("msg_id"));
        let mut f = encode(&sample(), &s);
        f[6] = b"[1,2]".to_vec();
        assert_eq!(decode(f, &s).unwrap_err(), WireError::BadJson("content"));
    }

    #[test]
    fn replay_guard_refuses_a_seen_signature_and_forgets_old_ones() {
        let mut g = ReplayGuard::new(2);
        assert!(g.check(b"a"));
        assert!(!g.check(b"a"));
        assert!(g.check(b"b"));
        assert!(g.check(b"c")); // evicts "a"
        assert!(g.check(b"a"));
        assert!(g.check(b""));
        assert!(g.check(b""));
    }

    #[test]
    fn replay_guard_knows_real_signatures_apart() {
        let mut g = ReplayGuard::new(10);
        let signer = Signer::new("k");
        let (one, two) = (signer.sign(&[b"{}"]), signer.sign(&[b"{ }"]));
        assert!(g.check(one.as_bytes()) && g.check(two.as_bytes()));
        assert!(!g.check(one.as_bytes()) && !g.check(two.as_bytes()));
    }

    #[test]
    fn ids_are_unique_and_dates_are_utc_iso8601() {
        assert_ne!(new_id(), new_id());
        let d = now_iso8601();
        assert!(d.ends_with('Z') && d.contains('T'), "{d}");
    }
}
