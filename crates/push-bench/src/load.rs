//! Clients: a request-rate load (wrk when installed, else a Rust loop over
//! keep-alive connections) and the held-request fan-out.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Requests per second and latency of a rate run.
#[derive(Clone, Debug)]
pub(crate) struct Rate {
    pub(crate) per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Answers other than the one expected (or socket errors).
    pub(crate) unexpected: u64,
    pub(crate) tool: &'static str,
}

/// One request the rate load repeats.
pub(crate) struct Target<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) expect: StatusCode,
}

/// Runs wrk (one thread, so the server keeps a core) if it is installed.
pub(crate) fn wrk(
    target: &Target<'_>,
    connections: usize,
    duration: Duration,
) -> Option<Result<Rate, String>> {
    let wrk = crate::which("wrk")?;
    let mut command = Command::new(wrk);
    command.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs().max(1)),
        "--latency",
    ]);
    for (name, value) in target.headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command.arg(format!("http://{}{}", target.addr, target.path));
    Some(match command.output() {
        Err(e) => Err(format!("running wrk: {e}")),
        Ok(output) => parse_wrk(&String::from_utf8_lossy(&output.stdout)),
    })
}

fn parse_wrk(out: &str) -> Result<Rate, String> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
    };
    let per_second = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let percentile = |p: &str| field(p).and_then(parse_wrk_duration).unwrap_or_default();
    let mut unexpected = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let Some(errors) = field("Socket errors:") {
        unexpected += errors
            .split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(Rate {
        per_second,
        p50: percentile("50%"),
        p99: percentile("99%"),
        unexpected,
        tool: "wrk",
    })
}

fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// The same load from Rust: `connections` keep-alive HTTP/1.1 connections,
/// each sending its next request when the last is answered.
pub(crate) async fn rust_loop(
    target: &Target<'_>,
    connections: usize,
    duration: Duration,
) -> Result<Rate, String> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let addr = target.addr;
        // Origin-form and a Host header, as wrk and browsers send them.
        let uri = target.path.to_owned();
        let host = target.addr.to_string();
        let headers = target.headers.to_vec();
        let expect = target.expect;
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            let mut unexpected = 0u64;
            let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
            while Instant::now() < deadline {
                // A server may close a keep-alive connection at any answer
                // (nginx after 1,000): open another, as wrk does.
                let ready = match &mut sender {
                    Some(s) => s.ready().await.is_ok(),
                    None => false,
                };
                if !ready {
                    sender = Some(connect(addr).await?);
                }
                let Some(live) = sender.as_mut() else {
                    continue;
                };
                let mut request = Request::get(&uri).header(http::header::HOST, &host);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let request = request
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let began = Instant::now();
                let Ok(response) = live.send_request(request).await else {
                    unexpected += 1;
                    sender = None;
                    continue;
                };
                let status = response.status();
                let read = response.into_body().collect().await;
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(micros.max(1));
                if status != expect || read.is_err() {
                    unexpected += 1;
                }
            }
            Ok::<_, String>((histogram, unexpected))
        });
    }
    let began = Instant::now();
    let mut total = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut unexpected = 0;
    while let Some(joined) = tasks.join_next().await {
        let (histogram, wrong) = joined.map_err(|e| e.to_string())??;
        total.add(histogram).map_err(|e| e.to_string())?;
        unexpected += wrong;
    }
    let elapsed = began.elapsed().max(duration);
    Ok(Rate {
        per_second: total.len() as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(total.value_at_quantile(0.5)),
        p99: Duration::from_micros(total.value_at_quantile(0.99)),
        unexpected,
        tool: "rust loop",
    })
}

async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One held request's answer: when it was fully read, its status and body.
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    pub(crate) status: u16,
    /// The status line and headers, as sent.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// Opens `count` connections to `addr`, each sending `request` and waiting
/// for its answer; returns the tasks. Connects are limited to a few hundred in
/// flight (the SYN backlog is 2,048 here). Sockets close with RST, so that
/// TIME_WAIT does not eat the port range over several runs.
pub(crate) fn hold_many(
    addr: SocketAddr,
    request: &str,
    count: usize,
) -> tokio::task::JoinSet<Result<Arrival, String>> {
    let request: Arc<[u8]> = request.as_bytes().into();
    let connecting = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let request = request.clone();
        let connecting = connecting.clone();
        tasks.spawn(async move {
            let mut stream = {
                let _permit = connecting.acquire().await.map_err(|e| e.to_string())?;
                let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
                socket.set_zero_linger().map_err(|e| e.to_string())?;
                let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
                stream
                    .write_all(&request)
                    .await
                    .map_err(|e| e.to_string())?;
                stream
            };
            read_response(&mut stream).await
        });
    }
    tasks
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or to the close).
async fn read_response(stream: &mut TcpStream) -> Result<Arrival, String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&buffer).map_err(|e| e.to_string())?;
        let httparse::Status::Complete(head) = parsed else {
            if read == 0 {
                return Err("closed before the headers".into());
            }
            continue;
        };
        let status = response.code.unwrap_or(0);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let body = &buffer[head..];
        let complete = if let Some(length) = header("content-length") {
            let length: usize = length.trim().parse().map_err(|_| "bad content-length")?;
            (body.len() >= length).then(|| body[..length].to_vec())
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            body.windows(5)
                .any(|w| w == b"0\r\n\r\n")
                .then(|| body.to_vec())
        } else if status == 204 || status == 304 {
            Some(Vec::new())
        } else {
            (read == 0).then(|| body.to_vec())
        };
        if let Some(body) = complete {
            return Ok(Arrival {
                at: Instant::now(),
                status,
                head: String::from_utf8_lossy(&buffer[..head]).into_owned(),
                body,
            });
        }
        if read == 0 {
            return Err("closed in the middle of the body".into());
        }
    }
}

/// Sends one request over a fresh connection and reads the answer.
pub(crate) async fn once(addr: SocketAddr, request: &str) -> Result<Arrival, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_response(&mut stream).await
}

/// A `GET` with these headers, closing after the answer.
pub(crate) fn get(path: &str, headers: &[(String, String)]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A `POST` of `body`, closing after the answer.
pub(crate) fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The value of header `name` in an answer's head.
pub(crate) fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  412.00us\n     75%  500.00us\n     90%  600.00us\n     99%    1.53ms\n  123456 requests in 10.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  12345.67\nTransfer/sec:      1.00MB\n";
        let rate = parse_wrk(out).unwrap();
        assert!((rate.per_second - 12345.67).abs() < 1e-6);
        assert_eq!(rate.p50, Duration::from_micros(412));
        assert_eq!(rate.p99, Duration::from_micros(1530));
        assert_eq!(rate.unexpected, 3);
    }
}
