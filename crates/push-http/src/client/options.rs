//! What every client sends besides its own headers, and how it talks TLS:
//! one [`HttpOptions`] in every client's config, set with the same builder
//! methods everywhere ([`client_options!`](crate::client_options)).

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ClientError;

/// The options every push client shares: headers sent on every request,
/// every reconnect and every WebSocket handshake (an `Authorization` token,
/// a `Cookie`), and, with the `rustls` feature, the TLS configuration for
/// `https://` and `wss://`.
///
/// A header that is not valid HTTP is kept as an error, not a panic: the
/// client that is given these options refuses to start with
/// [`ClientError::InvalidHeader`]. A client's own headers (`Last-Event-ID`,
/// `If-None-Match`, `Idempotency-Key`, the WebSocket handshake's) win over
/// these.
///
/// ```
/// use push_http::ClientError;
/// use push_http::client::HttpOptions;
///
/// let mut options = HttpOptions::default();
/// options.header("authorization", "Bearer secret");
/// assert!(options.check().is_ok());
/// options.header("bad name", "x");
/// assert!(matches!(options.check(), Err(ClientError::InvalidHeader { .. })));
/// ```
#[derive(Clone, Default)]
pub struct HttpOptions {
    headers: HeaderMap,
    /// The first header given that is not valid HTTP.
    invalid: Option<String>,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl HttpOptions {
    /// Sends `name: value` on every request (replacing an earlier value of
    /// `name`). Invalid input is kept for [`check`](Self::check).
    pub fn header<K, V>(&mut self, name: K, value: V)
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            (Err(err), _) => self.invalid(&err.into()),
            (_, Err(err)) => self.invalid(&err.into()),
        }
    }

    /// Sends every header of `headers` on every request (replacing earlier
    /// values of the same names).
    pub fn headers(&mut self, headers: HeaderMap) {
        self.headers.extend(headers);
    }

    fn invalid(&mut self, err: &http::Error) {
        self.invalid.get_or_insert_with(|| err.to_string());
    }

    /// The headers sent on every request.
    pub fn header_map(&self) -> &HeaderMap {
        &self.headers
    }

    /// `Ok` when every header given was valid.
    ///
    /// # Errors
    /// [`ClientError::InvalidHeader`] for the first one that was not.
    pub fn check(&self) -> Result<(), ClientError> {
        match &self.invalid {
            Some(reason) => Err(ClientError::InvalidHeader {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Adds these headers to `headers`, leaving every name `headers`
    /// already holds as it is (the client's own headers win).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in self.headers.keys() {
            if !headers.contains_key(name) {
                for value in self.headers.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
    }
}

#[cfg(feature = "rustls")]
impl HttpOptions {
    /// Talks TLS with `config` (rustls) instead of the default, which
    /// trusts the Web PKI roots of `webpki-roots`: to trust a private or
    /// test CA, or to present a client certificate.
    pub fn tls(&mut self, config: std::sync::Arc<rustls::ClientConfig>) {
        self.tls = Some(config);
    }

    /// The TLS configuration: the one given, or the default (the Web PKI
    /// roots, rustls with ring, TLS 1.2 and 1.3).
    ///
    /// # Errors
    /// [`ClientError::Request`] if rustls cannot build the default (it
    /// always can with ring).
    pub fn tls_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
        if let Some(config) = &self.tls {
            return Ok(config.clone());
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(ClientError::request)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(std::sync::Arc::new(config))
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are often secrets: only their names are shown.
        let mut debug = f.debug_struct("HttpOptions");
        debug.field("headers", &self.headers.keys().collect::<Vec<_>>());
        debug.field("invalid", &self.invalid);
        #[cfg(feature = "rustls")]
        debug.field("tls", &self.tls.as_ref().map(|_| "custom"));
        debug.finish()
    }
}

/// Gives a client's config type (with an `http: HttpOptions` field) the
/// builder methods every push client shares, one name each:
/// `with_header(name, value)`, `with_headers(HeaderMap)` and, with the
/// calling crate's `rustls` feature, `with_tls_config(Arc<rustls::ClientConfig>)`.
#[macro_export]
macro_rules! client_options {
    ($config:ty) => {
        impl $config {
            /// Sends `name: value` on every request, reconnect and
            /// WebSocket handshake (an `Authorization` token, a `Cookie`).
            /// A name or value that is not valid HTTP makes the client
            /// refuse to start (`ClientError::InvalidHeader`).
            #[must_use]
            pub fn with_header<K, V>(mut self, name: K, value: V) -> Self
            where
                K: ::core::convert::TryInto<$crate::client::__private::http::HeaderName>,
                K::Error: ::core::convert::Into<$crate::client::__private::http::Error>,
                V: ::core::convert::TryInto<$crate::client::__private::http::HeaderValue>,
                V::Error: ::core::convert::Into<$crate::client::__private::http::Error>,
            {
                self.http.header(name, value);
                self
            }

            /// Sends every header of `headers` on every request, reconnect
            /// and WebSocket handshake.
            #[must_use]
            pub fn with_headers(
                mut self,
                headers: $crate::client::__private::http::HeaderMap,
            ) -> Self {
                self.http.headers(headers);
                self
            }

            /// Talks TLS (`https://`, `wss://`) with `config` instead of the
            /// default, which trusts the Web PKI roots: to trust a private
            /// or test CA, or to present a client certificate.
            #[cfg(feature = "rustls")]
            #[must_use]
            pub fn with_tls_config(
                mut self,
                config: ::std::sync::Arc<$crate::client::rustls::ClientConfig>,
            ) -> Self {
                self.http.tls(config);
                self
            }
        }
    };
}
