//! The SSE fan-out scenario (`push-bench run --only sse`): event streams
//! held open from this process, each read by a lean event-stream reader that
//! undoes the chunked framing and looks only at `data:` lines. The scenario
//! itself (publishing, latency, saturation, tables) is [`fanout`](crate::fanout)'s.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::AsyncReadExt;

use push_live::http::Technique;

use crate::fanout::{MAX_HEAD, Protocol, Subscriber, Tally, nanos_since};

/// Server-Sent Events: `GET /sse/{channel}`, each message one event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sse;

impl Protocol for Sse {
    const TECHNIQUE: Technique = Technique::Sse;
    const TITLE: &'static str = "SSE";
    const UNIT: &'static str = "stream";
    const OPENED: &'static str = "has its response head";

    fn variants(server: &str) -> Vec<String> {
        match server {
            "hello" => vec!["hello-stream".into(), "hello-stream-direct".into()],
            other => vec![other.into()],
        }
    }

    fn count_path(server: &str) -> Option<&'static str> {
        match server {
            "nchan" => Some("/bench/held"),
            "push" | "push-direct" | "push-router" | "push-served" | "axum" => Some("/bench/sse"),
            _ => None,
        }
    }

    async fn subscribe(self, subscriber: &mut Subscriber) -> Result<(), String> {
        let request = format!(
            "GET /sse/{} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            subscriber.channel
        );
        let mut stream = subscriber.connect(request.as_bytes()).await?;
        let (index, tally) = (subscriber.index, subscriber.tally.clone());
        let mut buffer = [0u8; 4096];
        let mut head = Vec::new();
        let mut reader = loop {
            let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("closed before the response head".into());
            }
            head.extend_from_slice(&buffer[..read]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut reader = read_head(&head[..end + 4])?;
                subscriber.opened();
                reader.feed(&head[end + 4..], index, &tally);
                break reader;
            }
            if head.len() > MAX_HEAD {
                return Err("response head too long".into());
            }
        };
        drop(head);
        loop {
            let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Ok(());
            }
            reader.feed(&buffer[..read], index, &tally);
        }
    }
}

/// Checks the head (`200`) and makes a reader for the body that follows it.
fn read_head(head: &[u8]) -> Result<EventReader, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(head).map_err(|e| e.to_string())?;
    if response.code != Some(200) {
        return Err(format!(
            "answered {:?}: {}",
            response.code,
            String::from_utf8_lossy(head)
        ));
    }
    let chunked = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    Ok(EventReader {
        chunks: chunked.then_some(Chunks::Size(0)),
        text: Vec::new(),
        latencies: Vec::new(),
    })
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy)]
enum Chunks {
    /// Reading a chunk's size (hex), so far.
    Size(usize),
    /// Skipping a chunk extension, size known.
    Extension(usize),
    /// This many bytes of data to go.
    Data(usize),
    /// The line end after a chunk's data.
    DataEnd,
    /// The last chunk came: nothing more is data.
    Done,
}

/// A lean event-stream reader: undoes chunked framing, splits lines, and
/// looks only at `data:` lines (each event here has exactly one).
struct EventReader {
    /// `None` when the body is not chunked.
    chunks: Option<Chunks>,
    /// Body text not yet split into lines.
    text: Vec<u8>,
    /// The latencies of one read's events (reused).
    latencies: Vec<u64>,
}

impl EventReader {
    fn feed(&mut self, input: &[u8], index: usize, tally: &Tally) {
        match self.chunks {
            None => self.text.extend_from_slice(input),
            Some(state) => self.chunks = Some(dechunk(state, input, &mut self.text)),
        }
        let now_ns = nanos_since(tally.epoch, Instant::now());
        let step = tally.step.load(Ordering::Relaxed);
        let mut stale = 0;
        let mut start = 0;
        while let Some(newline) = self.text[start..].iter().position(|b| *b == b'\n') {
            let line = &self.text[start..start + newline];
            start += newline + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(value) = line.strip_prefix(b"data:") else {
                continue;
            };
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Tally::sort(value, step, now_ns, &mut self.latencies, &mut stale);
        }
        self.text.drain(..start);
        tally.record(index, &self.latencies, stale, now_ns);
        self.latencies.clear();
    }
}

/// Appends the data in `input` to `out`; returns the state after it.
fn dechunk(mut state: Chunks, input: &[u8], out: &mut Vec<u8>) -> Chunks {
    let mut at = 0;
    while at < input.len() {
        state = match state {
            Chunks::Size(size) => {
                let byte = input[at];
                at += 1;
                match byte {
                    b'\n' if size == 0 => Chunks::Done,
                    b'\n' => Chunks::Data(size),
                    b';' => Chunks::Extension(size),
                    _ => match char::from(byte).to_digit(16) {
                        Some(digit) => Chunks::Size(size * 16 + digit as usize),
                        None => Chunks::Size(size), // the CR, or stray whitespace
                    },
                }
            }
            Chunks::Extension(size) => {
                let byte = input[at];
                at += 1;
                match byte {
                    b'\n' if size == 0 => Chunks::Done,
                    b'\n' => Chunks::Data(size),
                    _ => Chunks::Extension(size),
                }
            }
            Chunks::Data(left) => {
                let take = left.min(input.len() - at);
                out.extend_from_slice(&input[at..at + take]);
                at += take;
                if take == left {
                    Chunks::DataEnd
                } else {
                    Chunks::Data(left - take)
                }
            }
            Chunks::DataEnd => {
                let byte = input[at];
                at += 1;
                if byte == b'\n' {
                    Chunks::Size(0)
                } else {
                    Chunks::DataEnd
                }
            }
            Chunks::Done => return Chunks::Done,
        };
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(reader: &mut EventReader, tally: &Tally, pieces: &[&[u8]]) {
        for piece in pieces {
            reader.feed(piece, 0, tally);
        }
    }

    #[test]
    fn dechunks_across_reads() {
        let (one, two) = ("id: 1\ndata: 1 5\n\n", "id: 2\ndata: 1 7\n\n");
        let body = format!(
            "{:x}\r\n{one}\r\n{:X};x=y\r\n{two}\r\n0\r\n\r\n",
            one.len(),
            two.len()
        );
        let body = body.as_bytes();
        for split in 0..body.len() {
            let mut out = Vec::new();
            let state = dechunk(Chunks::Size(0), &body[..split], &mut out);
            let state = dechunk(state, &body[split..], &mut out);
            assert!(matches!(state, Chunks::Done), "split at {split}");
            assert_eq!(out, format!("{one}{two}").as_bytes(), "split at {split}");
        }
    }

    #[test]
    fn counts_events_of_the_current_step_only() {
        let tally = Tally::new(1, Instant::now()).unwrap();
        let step = tally.begin_step();
        let mut reader = read_head(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
        let event = format!("id: 9\ndata: {step} 0\n\n");
        let stale = format!("data: {} 0\n\n", step + 7);
        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
        let stream = [
            chunk("retry: 3000\n\n"),
            chunk(&event),
            chunk(&stale),
            chunk(":\n\n"),
            chunk(&event),
        ]
        .concat();
        let (a, b) = stream.as_bytes().split_at(23);
        feed_all(&mut reader, &tally, &[a, b]);
        assert_eq!(tally.totals(), (2, 1, 2));
    }

    #[test]
    fn reads_a_body_that_is_not_chunked() {
        let tally = Tally::new(1, Instant::now()).unwrap();
        let step = tally.begin_step();
        let mut reader = read_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let text = format!(": hi\n\nid: 1:0\r\ndata: {step} 0\r\n\r\n");
        feed_all(&mut reader, &tally, &[text.as_bytes()]);
        assert_eq!(tally.totals().0, 1);
    }
}
