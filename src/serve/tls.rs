//! TLS in front of a connection (feature `tls`): the handshake, inside the
//! connection's first deadline, and ALPN choosing its HTTP.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Counted};
use super::{Builders, Protocol, Served, ServedBody, note, serve_http};

/// ALPN's name of HTTP/2 over TLS.
const H2: &[u8] = b"h2";
/// ALPN's name of HTTP/1.1.
const HTTP1: &[u8] = b"http/1.1";

/// `config`, offering `h2` (when HTTP/2 is built in) and `http/1.1` over
/// ALPN if it offers nothing itself.
pub(super) fn with_alpn(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    if !config.alpn_protocols.is_empty() {
        return config;
    }
    let mut config = Arc::unwrap_or_clone(config);
    if cfg!(feature = "http2") {
        config.alpn_protocols.push(H2.to_vec());
    }
    config.alpn_protocols.push(HTTP1.to_vec());
    Arc::new(config)
}

/// The HTTP that the protocol ALPN settled on means: `h2` is HTTP/2; with
/// none (a client that sends no ALPN) it is told from the first bytes, as
/// over plain TCP; anything else is taken for HTTP/1.1.
fn protocol(alpn: Option<&[u8]>) -> Protocol {
    match alpn {
        #[cfg(feature = "http2")]
        Some(H2) => Protocol::Http2,
        #[cfg(feature = "http2")]
        None => Protocol::Either,
        _ => Protocol::Http1,
    }
}

/// Completes the TLS handshake within the connection's deadline (idle or
/// not yet served: the header timeout from accepting; shed to make room;
/// the server shutting down), then serves HTTP over it. A failed handshake
/// is logged at debug and ends this connection only.
pub(super) async fn serve<S, B>(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    service: S,
    conn: &Arc<Conn>,
    builders: &Builders,
    token: &CancellationToken,
) where
    S: Served<B>,
    B: ServedBody,
{
    let handshake = acceptor.accept(Counted::new(stream, conn.clone()));
    let stream = tokio::select! {
        shaken = handshake => match shaken {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%err, "TLS handshake failed");
                return;
            }
        },
        verdict = conn.watch() => {
            note(conn, verdict);
            return;
        }
        () = token.cancelled() => return,
    };
    let protocol = protocol(stream.get_ref().1.alpn_protocol());
    serve_http(
        TokioIo::new(stream),
        protocol,
        service,
        conn,
        builders,
        token,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_picks_the_protocol() {
        assert_eq!(protocol(Some(HTTP1)), Protocol::Http1);
        assert_eq!(protocol(Some(b"spdy/3")), Protocol::Http1);
        #[cfg(feature = "http2")]
        {
            assert_eq!(protocol(Some(H2)), Protocol::Http2);
            assert_eq!(protocol(None), Protocol::Either);
        }
        #[cfg(not(feature = "http2"))]
        assert_eq!(protocol(None), Protocol::Http1);
    }
}
