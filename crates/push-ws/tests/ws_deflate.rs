//! permessage-deflate (RFC 7692) over real TCP, byte by byte: the handshake
//! is written by hand and frames read and written raw (tungstenite's
//! client speaks no extensions), compressed and inflated with flate2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::StreamExt as _;
use push_core::{ChannelName, Hub, Item, MemoryHub, Publication, Start, WireFormat};
use push_ws::{Endpoint, WsConfig, WsHandler};
use serde_json::Value;
use support::{Server, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Opens a socket at `path`, offering `extensions`: the stream, just past
/// the response's head, and that head.
async fn open(addr: SocketAddr, path: &str, extensions: Option<&str>) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if path == "/ws" {
        request.push_str("Sec-WebSocket-Protocol: push.v1\r\n");
    }
    if let Some(extensions) = extensions {
        request.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("the response", stream.read_u8()).await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (stream, head)
}

/// A server frame: its first byte (FIN, RSV1, opcode) and payload.
async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    within("a frame", async {
        let first = stream.read_u8().await.unwrap();
        let len = match stream.read_u8().await.unwrap() {
            126 => u64::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).unwrap()];
        stream.read_exact(&mut payload).await.unwrap();
        (first, payload)
    })
    .await
}

/// A masked client frame with first byte `first`.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | u8::try_from(n).unwrap()),
        n if n < 1 << 16 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&u64::try_from(n).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    compressor
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    assert_eq!(compressor.total_in(), data.len() as u64);
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

const RSV1: u8 = 0x40;

#[tokio::test]
async fn deflate_is_declined_unless_configured_or_offered_in_a_form_it_takes() {
    let off = Server::start(WsHandler::new(MemoryHub::new(), WsConfig::default())).await;
    let (_, head) = open(off.addr, "/ws/c", Some(OFFER)).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    let on = Server::start(WsHandler::new(
        MemoryHub::new(),
        WsConfig::default().with_deflate(0),
    ))
    .await;
    let (_, head) = open(on.addr, "/ws/c", Some(OFFER)).await;
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover"
        ),
        "{head}"
    );
    let (_, head) = open(on.addr, "/ws/c", None).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    // A server window smaller than the compressor's is declined.
    let (_, head) = open(
        on.addr,
        "/ws/c",
        Some("permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[tokio::test]
async fn a_message_is_compressed_once_for_every_subscriber() {
    let hub = MemoryHub::new();
    let server = Server::start(WsHandler::new(
        hub.clone(),
        WsConfig::default().with_deflate(256),
    ))
    .await;
    let channel: ChannelName = "c".parse().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (mut stream, _) = open(server.addr, "/ws/c", Some(OFFER)).await;
        // The `subscribed` greeting is small: it goes out plain.
        let (first, payload) = read_frame(&mut stream).await;
        assert_eq!(first, 0x81);
        let greeting: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(greeting["op"], "subscribed");
        sockets.push(stream);
    }
    let mut history = hub.subscribe(&channel, Start::Live).await.unwrap();
    let data = r#"{"temperature":21.5,"city":"Lyon"}"#.repeat(40);
    hub.publish(&channel, Publication::new(data.clone()))
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for stream in &mut sockets {
        let (first, payload) = read_frame(stream).await;
        assert_eq!(first, 0x80 | RSV1 | 1, "a final, compressed text frame");
        let envelope: Value = serde_json::from_slice(&inflate(&payload)).unwrap();
        assert_eq!(envelope["data"], data.as_str());
        assert!(payload.len() < data.len() / 4, "{} bytes", payload.len());
        payloads.push(payload);
    }
    // The same bytes for every socket: the message's own compressed slot,
    // filled by the first of them.
    let Some(Item::Message(message)) = history.next().await else {
        panic!("the message")
    };
    let slot = message.encoded(WireFormat::JsonEnvelopeDeflated, |_| {
        panic!("compressed again")
    });
    for payload in &payloads {
        assert_eq!(payload[..], slot[..]);
    }
    // Below the threshold: plain.
    hub.publish(&channel, Publication::new("small"))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut sockets[0]).await;
    assert_eq!(first, 0x81);
    let envelope: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(envelope["data"], "small");
}

#[tokio::test]
async fn compressed_commands_are_inflated_whole_or_in_fragments() {
    let server = Server::start(WsHandler::new(
        MemoryHub::new(),
        WsConfig::commands().with_deflate(1024),
    ))
    .await;
    let (mut stream, _) = open(server.addr, "/ws", Some(OFFER)).await;
    let command = br#"{"op":"subscribe","channel":"a","ref":1,"since":"earliest"}"#;
    stream
        .write_all(&client_frame(0x80 | RSV1 | 1, &deflate(command)))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!(first, 0x81);
    let ack: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((&ack["op"], &ack["ref"]), (&"ack".into(), &1.into()));
    // Fragmented: RSV1 on the first frame only, a ping between.
    let compressed = deflate(&command.map(|b| if b == b'1' { b'2' } else { b }));
    let (a, b) = compressed.split_at(compressed.len() / 2);
    let mut wire = client_frame(RSV1 | 1, a);
    wire.extend(client_frame(0x80 | 9, b"hi"));
    wire.extend(client_frame(0x80, b));
    stream.write_all(&wire).await.unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!((first, &payload[..]), (0x8a, &b"hi"[..]), "the pong");
    let (_, payload) = read_frame(&mut stream).await;
    let ack: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((&ack["op"], &ack["ref"]), (&"ack".into(), &2.into()));
}

#[tokio::test]
async fn a_compression_bomb_closes_with_1009() {
    let server = Server::start(WsHandler::new(
        MemoryHub::new(),
        WsConfig::default()
            .with_endpoint(Endpoint::Echo)
            .with_deflate(0),
    ))
    .await;
    let (mut stream, _) = open(server.addr, "/", Some(OFFER)).await;
    // 16 MiB of zeros in about 16 KiB; the limit is 64 KiB inflated.
    let bomb = deflate(&vec![0; 16 << 20]);
    assert!(bomb.len() < 64 << 10);
    stream
        .write_all(&client_frame(0x80 | RSV1 | 2, &bomb))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!(first, 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    // And garbage that is not deflate data is a 1007.
    let (mut stream, _) = open(server.addr, "/", Some(OFFER)).await;
    stream
        .write_all(&client_frame(0x80 | RSV1 | 1, &[0xff; 32]))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!(first, 0x88);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
}

/// CPU time (user + system, in clock ticks of 10 ms) of thread `tid` of
/// this process.
fn thread_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A JSON payload of about 1.5 KiB, different for each `n`: a dashboard
/// tick with the last 200 prices.
fn tick(n: usize) -> String {
    let history: Vec<String> = (0..200)
        .map(|i| format!("{:.2}", 100.0 + ((n * 7 + i * 13) % 997) as f64 / 10.0))
        .collect();
    format!(
        r#"{{"symbol":"ACME","n":{n},"price":{:.2},"volume":{},"status":"open","history":[{}]}}"#,
        100.0 + (n % 500) as f64 / 10.0,
        1000 + n * 37 % 9000,
        history.join(",")
    )
}

/// Bytes on the wire and server CPU per delivery, with and without
/// permessage-deflate: `cargo test -p push-ws --test ws_deflate --release
/// -- --ignored --nocapture deflate_cost`. The server runs on a thread of
/// its own, whose CPU time is read from /proc.
#[test]
#[ignore = "a measurement: run it on purpose"]
fn deflate_cost() {
    // PUSH_DEFLATE_SOCKETS: how many subscribers share each message.
    let sockets: usize = std::env::var("PUSH_DEFLATE_SOCKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    const MESSAGES: usize = 2000;
    for deflate in [false, true] {
        let hub = MemoryHub::with_config(
            push_core::MemoryHubConfig::default()
                .with_max_messages(MESSAGES * 2)
                .with_max_bytes(256 << 20),
        )
        .unwrap();
        let config = if deflate {
            WsConfig::default().with_deflate(1024)
        } else {
            WsConfig::default()
        };
        let handler = WsHandler::new(hub.clone(), config);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::start(handler).await;
                let tid = std::fs::read_link("/proc/thread-self").unwrap();
                let tid = tid.file_name().unwrap().to_string_lossy().into_owned();
                ready_tx.send((server.addr, tid)).unwrap();
                let _ = stop_rx.await;
            });
        });
        let (addr, tid) = ready_rx.recv().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (bytes, ticks) = runtime.block_on(async {
            let offer = deflate.then_some(OFFER);
            let mut readers = Vec::new();
            for _ in 0..sockets {
                let (mut stream, _) = open(addr, "/ws/c", offer).await;
                read_frame(&mut stream).await; // subscribed
                readers.push(tokio::spawn(async move {
                    let mut bytes = 0;
                    for _ in 0..MESSAGES {
                        let (_, payload) = read_frame(&mut stream).await;
                        let header = match payload.len() {
                            n if n < 126 => 2,
                            n if n < 1 << 16 => 4,
                            _ => 10,
                        };
                        bytes += header + payload.len();
                    }
                    bytes
                }));
            }
            let before = thread_ticks(&tid);
            let channel: ChannelName = "c".parse().unwrap();
            for n in 0..MESSAGES {
                hub.publish(&channel, Publication::new(tick(n)))
                    .await
                    .unwrap();
                if n % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let mut bytes = 0;
            for reader in readers {
                bytes += reader.await.unwrap();
            }
            (bytes, thread_ticks(&tid) - before)
        });
        let _ = stop_tx.send(());
        server.join().unwrap();
        let deliveries = (sockets * MESSAGES) as f64;
        println!(
            "deflate {deflate}: {:.0} bytes per delivery (payload {} bytes), {:.2} µs of server CPU per delivery ({sockets} sockets x {MESSAGES} messages)",
            bytes as f64 / deliveries,
            tick(1).len(),
            ticks as f64 * 10_000.0 / deliveries,
        );
    }
}
