//! The kernel's websocket (`/api/kernels/{id}/channels`): every channel multiplexed on one blocking
//! tungstenite connection, in the JSON text format or the `v1.kernel.websocket.jupyter.org` binary
//! format. Reads wait at most a short timeout so the caller can also watch Ctrl-C and its stdin.

use super::http::{unreachable, Server};
use crate::client::ClientError;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message as WsMessage, WebSocket};

pub const V1: &str = "v1.kernel.websocket.jupyter.org";

/// How messages are framed on the websocket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// One JSON text frame per message, with a `channel` key (every server has it).
    Json,
    /// Binary frames: u64-LE offsets, then channel, header, parent_header, metadata, content.
    V1,
}

/// One message as the websocket carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub channel: String,
    pub header: Value,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
}

impl Frame {
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

/// Plain TCP or TLS (one rustls, shared with HTTP), so tungstenite needs no TLS of its own.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        };
        quick_ack(self.tcp());
        n
    }
}

/// Acknowledge at once what we received. Jupyter Server writes without TCP_NODELAY, so a reply and
/// the status after it (two small writes) wait for our ACK of the first, which Linux otherwise
/// delays up to 40 ms (elsewhere nothing is done: see `sys::quick_ack`): every round trip took ~45 ms. The flag does not stick, hence after each read.
fn quick_ack(tcp: &TcpStream) {
    crate::sys::quick_ack(tcp)
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

/// An open websocket to one kernel.
pub struct Channels {
    ws: WebSocket<Stream>,
    pub format: Format,
}

/// Why a read or write failed: the connection (worth reconnecting) or anything else.
pub enum WsError {
    Dropped(String),
}

impl Channels {
    /// Opens the kernel's websocket for `session`. `format` None: offer v1 and take JSON if the
    /// server does not pick it.
    pub fn open(
        server: &Server,
        kernel_id: &str,
        session: &str,
        format: Option<Format>,
    ) -> Result<Channels, ClientError> {
        match format {
            Some(f) => Channels::open_as(server, kernel_id, session, f),
            None => match Channels::open_as(server, kernel_id, session, Format::V1) {
                Err(ClientError::Socket(m)) if m == NO_SUBPROTOCOL => {
                    Channels::open_as(server, kernel_id, session, Format::Json)
                }
                other => other,
            },
        }
    }

    fn open_as(
        server: &Server,
        kernel_id: &str,
        session: &str,
        format: Format,
    ) -> Result<Channels, ClientError> {
        let ws_base = server.base.replacen("http", "ws", 1);
        let url = format!("{ws_base}/api/kernels/{kernel_id}/channels?session_id={session}");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Remote(format!("bad websocket URL {url}: {e}")))?;
        let headers = request.headers_mut();
        if let Some(t) = &server.token {
            headers.insert("Authorization", format!("token {t}").parse().expect("token header"));
        }
        if format == Format::V1 {
            headers.insert("Sec-WebSocket-Protocol", V1.parse().expect("protocol header"));
        }
        let stream = connect_stream(server, &request)?;
        let (ws, _) = match tungstenite::client::client_with_config(request, stream, None) {
            Ok(done) => done,
            Err(tungstenite::HandshakeError::Failure(e)) => return Err(handshake_error(&server.base, e)),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                return Err(ClientError::Remote(format!("{url}: the websocket handshake timed out")))
            }
        };
        // Reads from now on wait briefly, so the caller's loop can look at Ctrl-C and stdin.
        let _ = ws.get_ref().tcp().set_read_timeout(Some(Duration::from_millis(100)));
        Ok(Channels { ws, format })
    }

    pub fn send(&mut self, frame: &Frame) -> Result<(), WsError> {
        let msg = match self.format {
            Format::Json => WsMessage::text(encode_json(frame)),
            Format::V1 => WsMessage::binary(encode_v1(frame)),
        };
        self.ws.send(msg).map_err(|e| WsError::Dropped(e.to_string()))
    }

    /// The next kernel message, or None if nothing came within the read timeout.
    pub fn recv(&mut self) -> Result<Option<Frame>, WsError> {
        loop {
            match self.ws.read() {
                Ok(WsMessage::Text(t)) => {
                    if let Some(f) = decode_json(t.as_bytes()) {
                        return Ok(Some(f));
                    }
                }
                Ok(WsMessage::Binary(b)) => {
                    let f = match self.format {
                        Format::V1 => decode_v1(&b),
                        Format::Json => decode_legacy_binary(&b),
                    };
                    if let Some(f) = f {
                        return Ok(Some(f));
                    }
                }
                Ok(_) => {} // ping/pong/close are handled by tungstenite
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(WsError::Dropped(e.to_string())),
            }
        }
    }

    /// Closes politely (the server then buffers nothing for us).
    pub fn close(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

const NO_SUBPROTOCOL: &str = "the server did not pick the v1 websocket protocol";

fn handshake_error(base: &str, e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_)) => {
            ClientError::Socket(NO_SUBPROTOCOL.into())
        }
        tungstenite::Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            ClientError::Remote(format!(
                "the server refused the token ({base} answered {} on the websocket)",
                resp.status().as_u16()
            ))
        }
        tungstenite::Error::Http(resp) if resp.status().as_u16() == 404 => {
            ClientError::KernelDied { running: false }
        }
        other => ClientError::Remote(format!("websocket to {base} failed: {other}")),
    }
}

fn connect_stream(
    server: &Server,
    request: &tungstenite::handshake::client::Request,
) -> Result<Stream, ClientError> {
    let uri = request.uri();
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs = (host.as_str(), port).to_socket_addrs().map_err(|e| unreachable(&server.base, &e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or_else(|| unreachable(&server.base, &last))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Stream::Plain(tcp));
    }
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| ClientError::Remote(format!("bad host name {host}: {e}")))?;
    let conn = rustls::ClientConnection::new(Arc::clone(&server.tls), name)
        .map_err(|e| ClientError::Remote(format!("TLS to {host} failed: {e}")))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

fn encode_json(f: &Frame) -> String {
    json!({
        "channel": f.channel,
        "header": f.header,
        "parent_header": f.parent_header,
        "metadata": f.metadata,
        "content": f.content,
        "buffers": [],
    })
    .to_string()
}

fn decode_json(bytes: &[u8]) -> Option<Frame> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    Some(Frame {
        channel: v["channel"].as_str()?.to_string(),
        header: v["header"].clone(),
        parent_header: v["parent_header"].clone(),
        metadata: v["metadata"].clone(),
        content: v["content"].clone(),
    })
}

pub fn encode_v1(f: &Frame) -> Vec<u8> {
    let parts: [Vec<u8>; 5] = [
        f.channel.as_bytes().to_vec(),
        f.header.to_string().into_bytes(),
        f.parent_header.to_string().into_bytes(),
        f.metadata.to_string().into_bytes(),
        f.content.to_string().into_bytes(),
    ];
    // One offset per part plus the end: the count, the offsets, then the parts.
    let count = parts.len() + 1;
    let mut offsets = Vec::with_capacity(count);
    let mut at = 8 * (1 + count);
    offsets.push(at);
    for p in &parts {
        at += p.len();
        offsets.push(at);
    }
    let mut out = Vec::with_capacity(at);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    for o in offsets {
        out.extend_from_slice(&(o as u64).to_le_bytes());
    }
    for p in parts {
        out.extend_from_slice(&p);
    }
    out
}

pub fn decode_v1(b: &[u8]) -> Option<Frame> {
    let word = |i: usize| -> Option<usize> {
        let bytes: [u8; 8] = b.get(8 * i..8 * i + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(bytes)).ok()
    };
    let count = word(0)?;
    if count < 6 || count > b.len() / 8 {
        return None;
    }
    let offsets: Vec<usize> = (1..=count).map(word).collect::<Option<_>>()?;
    let part = |i: usize| b.get(*offsets.get(i)?..*offsets.get(i + 1)?);
    let json = |i: usize| serde_json::from_slice::<Value>(part(i)?).ok();
    Some(Frame {
        channel: std::str::from_utf8(part(0)?).ok()?.to_string(),
        header: json(1)?,
        parent_header: json(2)?,
        metadata: json(3)?,
        content: json(4)?,
    })
}

/// The JSON format's binary frame (a message with buffers): u32-BE count and offsets, the message
/// JSON first. The buffers themselves are of no use to a terminal.
fn decode_legacy_binary(b: &[u8]) -> Option<Frame> {
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(4 * i..4 * i + 4)?.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let start = word(1)?;
    let end = if count > 1 { word(2)? } else { b.len() };
    decode_json(b.get(start..end)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            channel: "shell".into(),
            header: json!({"msg_id": "a", "msg_type": "execute_request"}),
            parent_header: json!({}),
            metadata: json!({"x": 1}),
            content: json!({"code": "print('é')"}),
        }
    }

    #[test]
    fn v1_round_trips_and_has_the_documented_layout() {
        let b = encode_v1(&frame());
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 6, "five parts and the end");
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 56, "the channel follows the offsets");
        assert_eq!(&b[56..61], b"shell");
        assert_eq!(decode_v1(&b), Some(frame()));
        assert_eq!(decode_v1(&b[..40]), None, "truncated: refused, no panic");
    }

    #[test]
    fn json_round_trips_and_legacy_binary_gives_the_message() {
        assert_eq!(decode_json(encode_json(&frame()).as_bytes()), Some(frame()));
        let msg = encode_json(&frame()).into_bytes();
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&12u32.to_be_bytes());
        b.extend_from_slice(&((12 + msg.len()) as u32).to_be_bytes());
        b.extend_from_slice(&msg);
        b.extend_from_slice(b"buffer");
        assert_eq!(decode_legacy_binary(&b), Some(frame()));
    }
}
