//! push-server's `--tls-cert` and `--tls-key`, with certificates made here
//! (rcgen): both or neither, a clear start error for a file that is missing
//! or not PEM, HTTP/2 over TLS from a Rust client, and in headless Chromium
//! (tests/e2e/h2_sse.mjs) ten event streams to one origin, each getting
//! every message, over HTTP/2; over HTTP/1.1 only six open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::{Running, refused};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use push_live::rustls::pki_types::{CertificateDer, ServerName};
use push_live::rustls::{ClientConfig, RootCertStore};
use rcgen::PublicKeyData as _;
use sha2::Digest as _;
use support::within;
use tokio::net::TcpStream;
use tokio::process::Command;

/// A self-signed certificate for 127.0.0.1 and localhost, its key, and the
/// files they are written to.
struct Cert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    /// base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    spki_hash: String,
}

impl Cert {
    fn new(name: &str) -> Cert {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let dir = std::env::temp_dir().join(format!("push-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let spki = made.signing_key.subject_public_key_info();
        Cert {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
            spki_hash: base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki)),
        }
    }

    fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// A file in its directory holding `contents`.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn tls_flags_go_together() {
    let stderr = refused(&["--tls-cert", "cert.pem"]).await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let stderr = refused(&["--tls-key", "key.pem"]).await;
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

#[tokio::test]
async fn a_missing_or_invalid_pem_stops_the_server_with_a_clear_error() {
    let cert = Cert::new("invalid");
    let other = Cert::new("other");
    let garbage = cert.file("garbage.pem", "not a certificate\n");
    let truncated = cert.file("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let missing = cert.dir.join("missing.pem");
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            path(&missing),
            path(&cert.key),
            &["--tls-cert", "missing.pem", "cannot read"],
        ),
        (
            path(&garbage),
            path(&cert.key),
            &["--tls-cert", "garbage.pem", "no certificate"],
        ),
        (
            path(&truncated),
            path(&cert.key),
            &["--tls-cert", "truncated.pem", "not valid PEM"],
        ),
        (
            path(&cert.cert),
            path(&garbage),
            &["--tls-key", "garbage.pem", "no private key"],
        ),
        // A key that is not the certificate's.
        (
            path(&cert.cert),
            path(&other.key),
            &["--tls-key", "key.pem"],
        ),
    ];
    for (cert_file, key_file, expected) in cases {
        let stderr = refused(&["--tls-cert", cert_file, "--tls-key", key_file]).await;
        assert!(stderr.contains("cannot serve TLS"), "{stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
        }
    }
}

#[tokio::test]
async fn push_server_speaks_http2_over_tls() {
    let cert = Cert::new("h2");
    let server = Running::start(&cert.args()).await;
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(push_live::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = within(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("https://127.0.0.1:{}/healthz", server.addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("/healthz", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert!(server.terminate().await.success());
}

/// The browsers this looks for, in order (or `PUSH_CHROMIUM`), as xtask does.
const CHROMIUMS: [&str; 4] = ["chromium", "chromium-browser", "google-chrome", "chrome"];

fn chromium() -> Option<String> {
    if let Ok(path) = std::env::var("PUSH_CHROMIUM") {
        return Some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs).find_map(|dir| {
        CHROMIUMS
            .iter()
            .map(|name| dir.join(name))
            .find(|candidate| candidate.is_file())
            .map(|found| found.display().to_string())
    })
}

#[tokio::test]
async fn chromium_opens_ten_event_streams_to_one_origin_over_http2() {
    let Some(node_path) = support::node_path("Node.js with playwright-core") else {
        return;
    };
    let Some(chromium) = chromium() else {
        assert!(
            !std::env::var("CI").is_ok_and(|ci| ci == "true"),
            "Chromium is not installed under CI=true (apt-get install -y chromium)"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "\n*** SKIPPED: Chromium is not installed; install it with: apt-get install -y chromium\n"
            );
        }
        return;
    };
    let cert = Cert::new("chromium");
    let tls = Running::start(&cert.args()).await;
    let plain = Running::start(&[]).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = Command::new("node")
        .arg(root.join("tests/e2e/h2_sse.mjs"))
        .args(["--chromium", &chromium])
        .args(["--https", &format!("https://127.0.0.1:{}", tls.addr.port())])
        .args(["--http", &format!("http://127.0.0.1:{}", plain.addr.port())])
        .args(["--spki", &cert.spki_hash])
        .env("NODE_PATH", &node_path)
        .kill_on_drop(true)
        .output();
    // The script's own waits are bounded; this only catches a hang.
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finished")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{stdout}");
    }
    assert!(
        output.status.success(),
        "tests/e2e/h2_sse.mjs failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PASS ten event streams over HTTP/2"),
        "{stdout}"
    );
    assert!(tls.terminate().await.success());
    assert!(plain.terminate().await.success());
}
