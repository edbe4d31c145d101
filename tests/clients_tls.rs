//! The Rust clients over TLS (`https://`, `wss://`, feature `rustls`)
//! against a real TLS server on 127.0.0.1: a certificate the test makes
//! (rcgen), tokio-rustls in front of the facade's router, ALPN `h2` and
//! `http/1.1` offered as a browser-facing server would. Every client and the
//! publisher work when given a `rustls::ClientConfig` that trusts the test
//! CA; with the default (Web PKI) roots the certificate is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/gate.rs"]
mod gate;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gate::Gate;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use push_live::client::rustls;
use push_live::client::{
    ClientError, EventSource, EventSourceConfig, LongPoller, LongPollerConfig, Outcome, Poller,
    PollerConfig, Publisher, PublisherConfig, WsClientConfig, WsSession, WsSubscriber,
};
use push_live::{Item, MemoryHub, Publication, Router, RouterConfig, Start};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{next_data, within};
use tokio::net::TcpListener;

const TOKEN: (&str, &str) = ("authorization", "Bearer t0ken");

/// A TLS server for the router behind a gate, and a client configuration
/// that trusts its certificate.
struct TlsServer {
    addr: SocketAddr,
    trust: Arc<rustls::ClientConfig>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    async fn start(gate: Gate) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert: CertificateDer<'static> = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trust = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, gate) = (acceptor.clone(), gate.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), gate)
                        .await;
                });
            }
        });
        TlsServer {
            addr,
            trust: Arc::new(trust),
            task,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(hub: &MemoryHub) -> TlsServer {
    let mut config = RouterConfig::default().with_publish(true);
    config.ws_commands = config.ws_commands.with_publish(true);
    let router = Router::new(hub.clone(), config);
    TlsServer::start(Gate::new(router, Some(TOKEN))).await
}

#[tokio::test]
async fn every_client_and_the_publisher_work_over_tls_with_a_ca_of_their_own() {
    let hub = MemoryHub::new();
    let server = start(&hub).await;
    let trust = server.trust.clone();

    let poll = PollerConfig::default()
        .with_interval(Duration::from_millis(20))
        .with_header(TOKEN.0, TOKEN.1)
        .with_tls_config(trust.clone());
    let mut poller = Poller::connect(&server.url("https", "/poll/c"), poll)
        .await
        .unwrap();
    let longpoll = LongPollerConfig::default()
        .with_header(TOKEN.0, TOKEN.1)
        .with_tls_config(trust.clone());
    let mut long_poller = LongPoller::connect(&server.url("https", "/longpoll/c"), longpoll)
        .await
        .unwrap();
    let sse = EventSourceConfig::default()
        .with_header(TOKEN.0, TOKEN.1)
        .with_tls_config(trust.clone());
    let mut events = EventSource::connect(&server.url("https", "/sse/c"), sse)
        .await
        .unwrap();
    let ws = WsClientConfig::default()
        .with_header(TOKEN.0, TOKEN.1)
        .with_tls_config(trust.clone());
    let session = WsSession::connect(&server.url("wss", "/ws"), ws.clone())
        .await
        .unwrap();
    let control = session.control();
    let channel = "c".parse().unwrap();
    control.subscribe(&channel, Start::Live).await.unwrap();
    let mut subscriber = WsSubscriber::connect(&server.url("wss", "/ws/c"), ws)
        .await
        .unwrap();

    let publisher = Publisher::new(
        &server.url("https", ""),
        PublisherConfig::default()
            .with_token("t0ken")
            .with_tls_config(trust),
    )
    .unwrap();
    let first = publisher.publish(&channel, "over tls").await.unwrap();

    assert_eq!(next_data(&mut poller).await, "over tls");
    assert_eq!(next_data(&mut long_poller).await, "over tls");
    assert_eq!(next_data(&mut events).await, "over tls");
    let mut session = session;
    match within("the session's message", session.next()).await {
        Some(Ok((c, Item::Message(m)))) => {
            assert_eq!(c, channel);
            assert_eq!(m.cursor(), first);
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(next_data(&mut subscriber).await, "over tls");
    // And the session publishes over wss, acknowledged with the cursor.
    let id = control
        .publish(&channel, Publication::new("over wss"))
        .await
        .unwrap();
    match within("the subscriber's message", subscriber.next()).await {
        Some(Ok(Item::Message(m))) => {
            assert_eq!((m.cursor(), &m.data()[..]), (id, &b"over wss"[..]));
        }
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_default_roots_refuse_a_certificate_they_do_not_know() {
    let hub = MemoryHub::new();
    let server = start(&hub).await;
    let publisher = Publisher::new(
        &server.url("https", ""),
        PublisherConfig::default()
            .with_token("t0ken")
            .with_retries(0),
    )
    .unwrap();
    let err = publisher
        .publish(&"c".parse().unwrap(), "never")
        .await
        .unwrap_err();
    assert_eq!(err.outcome(), Outcome::NotPublished);
    assert!(chain(err.error()).contains("UnknownIssuer"), "{err:?}");

    let ws = WsClientConfig::default().with_header(TOKEN.0, TOKEN.1);
    let mut subscriber = WsSubscriber::connect(&server.url("wss", "/ws/c"), ws)
        .await
        .unwrap();
    match within("the refusal", subscriber.next()).await {
        Some(Err(err @ ClientError::Request(_))) => {
            assert!(chain(&err).contains("UnknownIssuer"), "{err:?}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

/// An error and all its sources, as text.
fn chain(err: &ClientError) -> String {
    let mut text = format!("{err:?}");
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(&format!(" / {err:?}"));
        source = err.source();
    }
    text
}
