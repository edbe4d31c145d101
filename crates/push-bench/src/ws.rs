//! The WebSocket fan-out scenario (`push-bench run --only ws`): sockets
//! opened on `GET /ws/{channel}` from this process, each message one text
//! frame. The scenario itself (publishing, latency, saturation, tables) is
//! [`fanout`](crate::fanout)'s.
//!
//! Two clients: tokio-tungstenite's (the default, with a 4 KiB read buffer),
//! and a lean one (`--ws-client lean`) that writes the handshake itself,
//! reads frames from a 4 KiB buffer on the stack and answers pings. Client
//! and server share two cores, so the client's CPU per delivery is part of
//! what is measured (each step reports it): measured here, the two cost the
//! same to within the noise (about 9 µs per delivery at 1,000 × 50/s, one
//! message per read, and about 1 µs at 10,000, where reads batch), nearly all
//! of it the kernel's, so the standard client is the default.
//!
//! A message's data (`STEP NANOS`) arrives raw (Nchan) or inside a JSON
//! envelope (push; axum here sends one too), as the string after `"data":"`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tungstenite::Message;
use tungstenite::protocol::WebSocketConfig;

use push_live::http::Technique;

use crate::fanout::{MAX_HEAD, Protocol, Subscriber, Tally, nanos_since};

/// A fixed `Sec-WebSocket-Key` (RFC 6455's example) and the accept it calls for.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The mask of the client's frames (pongs only).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The largest message the lean client accepts.
const MAX_MESSAGE: usize = 1 << 20;

/// Which client the subscribers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum WsClient {
    /// The handshake and frames by hand.
    Lean,
    /// tokio-tungstenite's client, with a 4 KiB read buffer.
    #[default]
    Tungstenite,
}

impl WsClient {
    pub(crate) fn parse(text: &str) -> Result<WsClient, String> {
        match text {
            "lean" => Ok(WsClient::Lean),
            "tungstenite" => Ok(WsClient::Tungstenite),
            other => Err(format!("--ws-client: lean or tungstenite, not {other:?}")),
        }
    }
}

/// WebSockets: `GET /ws/{channel}`, each message one text frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ws {
    pub(crate) client: WsClient,
}

impl Protocol for Ws {
    const TECHNIQUE: Technique = Technique::Ws;
    const TITLE: &'static str = "WebSocket";
    const UNIT: &'static str = "socket";
    const OPENED: &'static str = "is open (its `101` arrived)";

    fn variants(server: &str) -> Vec<String> {
        match server {
            "hello" => vec![
                "hello-ws".into(),
                "hello-ws-direct".into(),
                "write-floor".into(),
            ],
            "axum" => vec!["axum".into(), "axum-4k".into()],
            other => vec![other.into()],
        }
    }

    fn count_path(server: &str) -> Option<&'static str> {
        match server {
            "nchan" => Some("/bench/held"),
            "push" | "push-direct" | "push-router" | "axum" | "axum-4k" | "write-floor" => {
                Some("/bench/ws")
            }
            _ => None,
        }
    }

    async fn subscribe(self, subscriber: &mut Subscriber) -> Result<(), String> {
        match self.client {
            WsClient::Lean => lean(subscriber).await,
            WsClient::Tungstenite => tungstenite_client(subscriber).await,
        }
    }
}

async fn lean(subscriber: &mut Subscriber) -> Result<(), String> {
    let request = format!(
        "GET /ws/{} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        subscriber.channel
    );
    let mut stream = subscriber.connect(request.as_bytes()).await?;
    let _ = stream.set_nodelay(true);
    let (index, tally) = (subscriber.index, subscriber.tally.clone());
    let mut buffer = [0u8; 4096];
    let mut reply = Vec::new();
    let mut head = Vec::new();
    let mut reader = loop {
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("closed before the handshake's answer".into());
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            check_head(&head[..end + 4])?;
            subscriber.opened();
            let mut reader = FrameReader::default();
            reader.feed(&head[end + 4..], index, &tally, &mut reply)?;
            break reader;
        }
        if head.len() > MAX_HEAD {
            return Err("response head too long".into());
        }
    };
    drop(head);
    loop {
        if !reply.is_empty() {
            stream.write_all(&reply).await.map_err(|e| e.to_string())?;
            reply.clear();
        }
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the server closed the connection without a close frame".into());
        }
        reader.feed(&buffer[..read], index, &tally, &mut reply)?;
    }
}

/// Checks the handshake's answer: `101`, `Upgrade: websocket`, the right accept.
fn check_head(head: &[u8]) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(head).map_err(|e| e.to_string())?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if response.code != Some(101)
        || !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        || header("sec-websocket-accept").as_deref() != Some(ACCEPT)
    {
        return Err(format!(
            "not a WebSocket handshake: {}",
            String::from_utf8_lossy(head)
        ));
    }
    Ok(())
}

/// A lean reader of a server's frames: complete frames are handled straight
/// from the input, a partial one is carried over to the next read.
#[derive(Default)]
pub(crate) struct FrameReader {
    /// The start of a frame whose rest has not arrived yet.
    partial: Vec<u8>,
    /// A fragmented message's payload so far.
    message: Vec<u8>,
    fragmented: bool,
    /// The latencies of one read's messages (reused).
    latencies: Vec<u64>,
}

/// Where one read's messages go.
struct Sink<'a> {
    step: u32,
    now_ns: u64,
    latencies: &'a mut Vec<u64>,
    stale: u64,
}

impl Sink<'_> {
    fn message(&mut self, payload: &[u8]) {
        Tally::sort(
            envelope_data(payload),
            self.step,
            self.now_ns,
            self.latencies,
            &mut self.stale,
        );
    }
}

impl FrameReader {
    /// Reads the frames in `input` for subscriber `index`; the answers to
    /// pings go to `reply`. A close frame or a protocol error ends it.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        index: usize,
        tally: &Tally,
        reply: &mut Vec<u8>,
    ) -> Result<(), String> {
        let now_ns = nanos_since(tally.epoch, Instant::now());
        let mut sink = Sink {
            step: tally.step.load(Ordering::Relaxed),
            now_ns,
            latencies: &mut self.latencies,
            stale: 0,
        };
        let result = if self.partial.is_empty() {
            let (used, result) = frames(
                input,
                &mut self.message,
                &mut self.fragmented,
                &mut sink,
                reply,
            );
            self.partial.extend_from_slice(&input[used..]);
            result
        } else {
            self.partial.extend_from_slice(input);
            let (used, result) = frames(
                &self.partial,
                &mut self.message,
                &mut self.fragmented,
                &mut sink,
                reply,
            );
            self.partial.drain(..used);
            result
        };
        let stale = sink.stale;
        tally.record(index, &self.latencies, stale, now_ns);
        self.latencies.clear();
        result
    }
}

/// Handles the complete frames at the start of `input`; returns how many
/// bytes they took, and an error for a close frame or a protocol error.
fn frames(
    input: &[u8],
    message: &mut Vec<u8>,
    fragmented: &mut bool,
    sink: &mut Sink<'_>,
    reply: &mut Vec<u8>,
) -> (usize, Result<(), String>) {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.len() < 2 {
            return (at, Ok(()));
        }
        let (fin, opcode) = (rest[0] & 0x80 != 0, rest[0] & 0x0f);
        let masked = rest[1] & 0x80 != 0;
        let (length, mut header) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            126 | 127 => return (at, Ok(())),
            short => (u64::from(short), 2),
        };
        let Some(length) = usize::try_from(length).ok().filter(|l| *l <= MAX_MESSAGE) else {
            return (at, Err(format!("a frame of {length} bytes")));
        };
        let mut mask = None;
        if masked {
            if rest.len() < header + 4 {
                return (at, Ok(()));
            }
            mask = Some([
                rest[header],
                rest[header + 1],
                rest[header + 2],
                rest[header + 3],
            ]);
            header += 4;
        }
        if rest.len() < header + length {
            return (at, Ok(()));
        }
        at += header + length;
        let unmasked: Vec<u8>;
        let mut payload = &rest[header..header + length];
        if let Some(mask) = mask {
            // Servers must not mask; unmask anyway.
            unmasked = payload
                .iter()
                .zip(mask.iter().cycle())
                .map(|(b, m)| b ^ m)
                .collect();
            payload = &unmasked;
        }
        match opcode {
            0x0 if *fragmented => {
                if message.len() + payload.len() > MAX_MESSAGE {
                    return (at, Err("a fragmented message too large".into()));
                }
                message.extend_from_slice(payload);
                if fin {
                    sink.message(message);
                    message.clear();
                    *fragmented = false;
                }
            }
            0x1 | 0x2 if !*fragmented => {
                if fin {
                    sink.message(payload);
                } else {
                    message.extend_from_slice(payload);
                    *fragmented = true;
                }
            }
            0x0..=0x2 => return (at, Err("frames of two messages interleaved".into())),
            0x8 => return (at, Err(close_reason(payload))),
            0x9 => {
                if payload.len() > 125 {
                    return (at, Err("a ping of more than 125 bytes".into()));
                }
                pong(reply, payload);
            }
            0xa => {}
            other => return (at, Err(format!("a frame with opcode {other:#x}"))),
        }
    }
}

/// Appends a (masked, as a client's must be) pong answering `payload`.
fn pong(reply: &mut Vec<u8>, payload: &[u8]) {
    reply.push(0x8a);
    reply.push(0x80 | u8::try_from(payload.len()).unwrap_or(125));
    reply.extend_from_slice(&MASK);
    reply.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// What a close frame says.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [high, low, reason @ ..] => format!(
            "closed by the server: {} {}",
            u16::from_be_bytes([*high, *low]),
            String::from_utf8_lossy(reason)
        ),
        _ => "closed by the server (no code)".into(),
    }
}

/// The message's data: raw, or the `"data"` string of a JSON envelope
/// (`STEP NANOS` holds nothing JSON escapes).
fn envelope_data(payload: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"data\":\"";
    if payload.first() != Some(&b'{') {
        return payload;
    }
    let Some(start) = payload.windows(KEY.len()).position(|w| w == KEY) else {
        return payload;
    };
    let value = &payload[start + KEY.len()..];
    let end = value.iter().position(|b| *b == b'"').unwrap_or(value.len());
    &value[..end]
}

/// The same subscriber on tokio-tungstenite's client.
async fn tungstenite_client(subscriber: &mut Subscriber) -> Result<(), String> {
    let stream = subscriber.connect(&[]).await?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{}/ws/{}", subscriber.addr, subscriber.channel);
    let config = WebSocketConfig::default().read_buffer_size(4 << 10);
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| e.to_string())?;
    subscriber.opened();
    let (index, tally) = (subscriber.index, subscriber.tally.clone());
    let mut latencies = Vec::with_capacity(1);
    while let Some(message) = ws.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let payload: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
            Message::Close(frame) => {
                return Err(format!("closed by the server: {frame:?}"));
            }
            _ => continue,
        };
        let now_ns = nanos_since(tally.epoch, Instant::now());
        let step = tally.step.load(Ordering::Relaxed);
        let mut stale = 0;
        Tally::sort(
            envelope_data(payload),
            step,
            now_ns,
            &mut latencies,
            &mut stale,
        );
        tally.record(index, &latencies, stale, now_ns);
        latencies.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => frame.push(n as u8),
            n @ 126..=65535 => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn finds_the_data_in_an_envelope_or_raw() {
        let envelope = br#"{"channel":"ws-1","id":"3-1","time":17,"data":"4 1234"}"#;
        assert_eq!(envelope_data(envelope), b"4 1234");
        assert_eq!(envelope_data(b"4 1234"), b"4 1234");
        let axum = serde_json::json!({"channel": "c", "id": "1", "data": "4 99"}).to_string();
        assert_eq!(envelope_data(axum.as_bytes()), b"4 99");
    }

    #[test]
    fn reads_frames_split_anywhere_and_answers_pings() {
        let tally = Tally::new(1, Instant::now()).unwrap();
        let step = tally.begin_step();
        let one = format!(r#"{{"channel":"c","id":"1","data":"{step} 0"}}"#);
        let raw = format!("{step} 0");
        let padding = "x".repeat(300);
        let mut stream = Vec::new();
        stream.extend(frame(0x1, true, one.as_bytes()));
        stream.extend(frame(0x9, true, b"hi"));
        stream.extend(frame(0x2, true, raw.as_bytes()));
        // A fragmented message of more than 125 bytes (two-byte length).
        let fragmented = format!(r#"{{"pad":"{padding}","data":"{step} 0"}}"#);
        let (a, b) = fragmented.as_bytes().split_at(200);
        stream.extend(frame(0x1, false, a));
        stream.extend(frame(0xa, true, b""));
        stream.extend(frame(0x0, true, b));
        stream.extend(frame(0x1, true, format!("{} 0", step + 1).as_bytes()));
        for split in 0..stream.len() {
            let tally = Tally::new(1, tally.epoch).unwrap();
            let step_again = tally.begin_step();
            assert_eq!(step_again, step);
            let mut reader = FrameReader::default();
            let mut reply = Vec::new();
            let (x, y) = stream.split_at(split);
            reader.feed(x, 0, &tally, &mut reply).unwrap();
            reader.feed(y, 0, &tally, &mut reply).unwrap();
            assert_eq!(tally.totals(), (3, 1, 3), "split at {split}");
            // The pong: masked, the ping's payload.
            let masked: Vec<u8> = b"hi".iter().zip(MASK.iter()).map(|(b, m)| b ^ m).collect();
            assert_eq!(reply[..6], [0x8a, 0x82, MASK[0], MASK[1], MASK[2], MASK[3]]);
            assert_eq!(reply[6..], masked[..], "split at {split}");
            assert!(reader.partial.is_empty());
        }
    }

    #[test]
    fn a_close_frame_ends_the_socket() {
        let tally = Tally::new(1, Instant::now()).unwrap();
        let mut reader = FrameReader::default();
        let mut close = vec![0x03, 0xe9];
        close.extend_from_slice(b"going away");
        let error = reader
            .feed(&frame(0x8, true, &close), 0, &tally, &mut Vec::new())
            .unwrap_err();
        assert_eq!(error, "closed by the server: 1001 going away");
    }

    #[test]
    fn checks_the_handshake_answer() {
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        assert!(check_head(good.as_bytes()).is_ok());
        assert!(check_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_err());
        let wrong = good.replace(ACCEPT, "AAAA");
        assert!(check_head(wrong.as_bytes()).is_err());
        // The key and accept are RFC 6455's example pair.
        assert_eq!(
            tungstenite::handshake::derive_accept_key(KEY.as_bytes()),
            ACCEPT
        );
    }
}
