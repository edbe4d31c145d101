//! Who may publish and who may subscribe: a publisher secret checked in
//! constant time, and subscriber tokens (HS256 JWTs) naming the channels they
//! may read and when they expire.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use push_live::ChannelName;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The longest token accepted, header or query.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The shortest HS256 secret accepted: the hash's size, as RFC 7518 §3.2
/// requires.
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Why a request was not let in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("a token is required: send `Authorization: Bearer TOKEN` or `?token=TOKEN`")]
    Missing,
    /// Not a token this server can read.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature does not match (or the publisher secret is wrong).
    #[error("the token is not valid")]
    Invalid,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Valid, but not for this channel.
    #[error("the token does not allow this on channel {0}")]
    Forbidden(String),
    /// Publishing is off: a public address, and no publisher secret.
    #[error(
        "publishing is off: this server listens on a non-loopback address without --publish-token; set one, or start it with --open-publish"
    )]
    Protected,
}

impl AuthError {
    /// `401` for a missing or bad token, `403` for a good one that does not
    /// cover the channel, or publishing that is off.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Forbidden(_) | AuthError::Protected => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// The JSON error code (docs/protocol.md §1.7).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Protected => "publish_disabled",
            AuthError::Expired => "token_expired",
            _ => "unauthorized",
        }
    }
}

/// The publisher secret: kept as its SHA-256, compared in constant time (also
/// in length: both sides are hashed first).
#[derive(Clone)]
pub struct PublishToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for PublishToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublishToken(…)")
    }
}

impl PublishToken {
    /// The secret publishers must present.
    ///
    /// # Errors
    /// An empty or blank secret: with it, an empty `?token=` would pass.
    pub fn new(secret: &str) -> Result<Self, AuthError> {
        if secret.trim().is_empty() {
            return Err(AuthError::Malformed("the publisher secret is empty"));
        }
        Ok(PublishToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Checks `Authorization: Bearer …`.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without the header, [`AuthError::Invalid`] when
    /// it is wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let given = bearer(headers)?.ok_or(AuthError::Missing)?;
        if self.matches(given) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Whether `given` is the secret (in constant time).
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

/// The token of `Authorization: Bearer TOKEN`, if the header is there.
///
/// # Errors
/// [`AuthError::Malformed`] for another scheme, a repeated header, or an
/// unreadable or oversized value.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed(
            "Authorization is given more than once",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("Authorization is not text"))?;
    if value.len() > MAX_TOKEN_LEN + 7 {
        return Err(AuthError::Malformed("the token is too long"));
    }
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("Authorization must be `Bearer TOKEN`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("Authorization must be `Bearer TOKEN`"));
    }
    Ok(Some(token.trim()))
}

/// Channel patterns: exact names, or a prefix ending in `*` (`room:*`; `*`
/// alone matches every channel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Patterns {
    /// Parses a JSON array of pattern strings.
    fn from_json(value: Option<&Value>, claim: &'static str) -> Result<Patterns, AuthError> {
        let Some(value) = value else {
            return Ok(Patterns::default());
        };
        let items = value.as_array().ok_or(AuthError::Malformed(claim))?;
        let mut patterns = Vec::with_capacity(items.len());
        for item in items {
            let text = item.as_str().ok_or(AuthError::Malformed(claim))?;
            patterns.push(match text.strip_suffix('*') {
                Some(prefix) => Pattern::Prefix(prefix.to_owned()),
                None => Pattern::Exact(text.to_owned()),
            });
        }
        Ok(Patterns(patterns))
    }

    /// Whether `channel` matches one of them.
    pub fn allows(&self, channel: &ChannelName) -> bool {
        let name = channel.as_str();
        self.0.iter().any(|pattern| match pattern {
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        })
    }
}

/// What a valid subscriber token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// When it expires, in seconds since the Unix epoch (`exp`).
    pub expires: u64,
    /// The channels it may read (`channels`).
    pub subscribe: Patterns,
    /// The channels it may publish to over the WebSocket command endpoint
    /// (`publish`; none when absent).
    pub publish: Patterns,
    /// Who it names (`sub`): the user presence lists and announces.
    pub user: Option<Arc<str>>,
}

/// Verifies HS256 JWTs with one shared secret.
///
/// Strict on purpose: the header must say `"alg":"HS256"` (no other
/// algorithm, no `none`, no `crit`), `exp` is required, `nbf` is honoured,
/// and the signature is compared in constant time.
#[derive(Clone)]
pub struct JwtVerifier {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier(HS256)")
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret`.
    ///
    /// # Errors
    /// A secret shorter than [`MIN_JWT_SECRET_LEN`] bytes (RFC 7518 §3.2:
    /// shorter keys make the signature guessable offline).
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_JWT_SECRET_LEN {
            return Err(AuthError::Malformed(
                "the JWT secret must be at least 32 bytes (RFC 7518 §3.2)",
            ));
        }
        let key = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| AuthError::Malformed("the JWT secret is not a usable key"))?;
        Ok(JwtVerifier { key })
    }

    /// Checks `token` at `now` (seconds since the Unix epoch).
    ///
    /// # Errors
    /// Any [`AuthError`] but `Missing` and `Forbidden`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("the token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("a JWT has three parts"));
        };
        let header = decode_json(header, "the header is not base64url JSON")?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(AuthError::Malformed("only HS256 tokens are accepted"));
        }
        if header
            .get("typ")
            .is_some_and(|typ| typ.as_str() != Some("JWT"))
            || header.get("crit").is_some()
        {
            return Err(AuthError::Malformed("unsupported header"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed("the signature is not base64url"))?;
        let mut mac = self.key.clone();
        let signed_len = token.len() - signature_text_len(token);
        mac.update(&token.as_bytes()[..signed_len]);
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::Invalid)?;
        let claims = decode_json(payload, "the payload is not base64url JSON")?;
        let expires = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(AuthError::Malformed("`exp` (a NumericDate) is required"))?;
        if now >= expires {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf =
                numeric_date(nbf).ok_or(AuthError::Malformed("`nbf` must be a NumericDate"))?;
            if now < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        Ok(Claims {
            expires,
            subscribe: Patterns::from_json(
                claims.get("channels"),
                "`channels` must be an array of strings",
            )?,
            publish: Patterns::from_json(
                claims.get("publish"),
                "`publish` must be an array of strings",
            )?,
            user: match claims.get("sub") {
                None | Some(Value::Null) => None,
                Some(Value::String(sub)) => Some(Arc::from(sub.as_str())),
                Some(_) => return Err(AuthError::Malformed("`sub` must be a string")),
            },
        })
    }

    /// Signs `claims` (a JSON object): for tests and for tools that mint
    /// tokens.
    pub fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let mut mac = self.key.clone();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// A NumericDate (RFC 7519 §2: seconds since the epoch, any JSON number,
/// fractions allowed) as whole seconds rounded up, so that for a whole `now`
/// `now < date` holds exactly when it holds for the exact date; saturating
/// (a negative date is 0, a huge one `u64::MAX`).
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(whole) = value.as_u64() {
        return Some(whole);
    }
    let date = value.as_f64()?;
    // `as` saturates, and maps NaN (which JSON cannot hold) to 0.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(date.ceil() as u64)
}

/// The length of the signature part, with its dot.
fn signature_text_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json(part: &str, what: &'static str) -> Result<Value, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(what))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(what))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(AuthError::Malformed(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(b"a secret of thirty-two bytes!!!!").unwrap()
    }

    fn channel(name: &str) -> ChannelName {
        name.parse().unwrap()
    }

    #[test]
    fn a_signed_token_round_trips_with_its_channels() {
        let token = verifier()
            .sign(&json!({"exp": NOW + 60, "channels": ["news", "room:*"], "publish": ["room:1"]}));
        let claims = verifier().verify(&token, NOW).unwrap();
        assert_eq!(claims.expires, NOW + 60);
        assert!(claims.subscribe.allows(&channel("news")));
        assert!(claims.subscribe.allows(&channel("room:42")));
        assert!(!claims.subscribe.allows(&channel("newsroom")));
        assert!(!claims.subscribe.allows(&channel("room")));
        assert!(claims.publish.allows(&channel("room:1")));
        assert!(!claims.publish.allows(&channel("room:2")));
        let everything = verifier().sign(&json!({"exp": NOW + 1, "channels": ["*"]}));
        assert!(
            verifier()
                .verify(&everything, NOW)
                .unwrap()
                .subscribe
                .allows(&channel("any"))
        );
    }

    #[test]
    fn expiry_and_not_before_are_enforced() {
        let token = verifier().sign(&json!({"exp": NOW, "channels": ["news"]}));
        assert_eq!(verifier().verify(&token, NOW), Err(AuthError::Expired));
        assert!(verifier().verify(&token, NOW - 1).is_ok());
        let early = verifier().sign(&json!({"exp": NOW + 10, "nbf": NOW + 5}));
        assert_eq!(verifier().verify(&early, NOW), Err(AuthError::NotYetValid));
        let forever = verifier().sign(&json!({"channels": ["news"]}));
        assert!(matches!(
            verifier().verify(&forever, NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let token = verifier().sign(&json!({"exp": NOW + 60, "channels": ["news"]}));
        let other = JwtVerifier::new(b"another secret, thirty-two bytes+").unwrap();
        assert_eq!(other.verify(&token, NOW), Err(AuthError::Invalid));
        // The payload swapped for one naming more channels.
        let (head, rest) = token.split_once('.').unwrap();
        let signature = rest.rsplit_once('.').unwrap().1;
        let forged_payload =
            URL_SAFE_NO_PAD.encode(json!({"exp": NOW + 60, "channels": ["*"]}).to_string());
        let forged = format!("{head}.{forged_payload}.{signature}");
        assert_eq!(verifier().verify(&forged, NOW), Err(AuthError::Invalid));
        // alg: none, and another algorithm, are refused before any signature.
        for alg in ["none", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let unsigned = format!("{header}.{forged_payload}.");
            assert!(
                matches!(
                    verifier().verify(&unsigned, NOW),
                    Err(AuthError::Malformed(_))
                ),
                "{alg}"
            );
        }
        assert!(matches!(
            verifier().verify("a.b", NOW),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verifier().verify("a.b.c.d", NOW),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verifier().verify(&"x".repeat(MAX_TOKEN_LEN + 1), NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn expiry_is_any_numeric_date_and_saturates() {
        let at = |exp: Value| {
            verifier().verify(
                &verifier().sign(&json!({"exp": exp, "channels": ["news"]})),
                NOW,
            )
        };
        assert_eq!(at(json!(u64::MAX)).unwrap().expires, u64::MAX);
        assert_eq!(at(json!(1e300)).unwrap().expires, u64::MAX);
        assert_eq!(at(json!(NOW as f64 + 0.5)).unwrap().expires, NOW + 1);
        assert_eq!(at(json!(NOW as f64 - 0.5)), Err(AuthError::Expired));
        assert_eq!(at(json!(-5)), Err(AuthError::Expired));
        assert!(matches!(at(json!("soon")), Err(AuthError::Malformed(_))));
        let early = verifier().sign(&json!({"exp": NOW + 10, "nbf": NOW as f64 + 0.25}));
        assert_eq!(verifier().verify(&early, NOW), Err(AuthError::NotYetValid));
        assert!(verifier().verify(&early, NOW + 1).is_ok());
    }

    #[test]
    fn short_and_empty_secrets_are_refused() {
        assert!(JwtVerifier::new(b"").is_err());
        assert!(JwtVerifier::new(&[b'k'; MIN_JWT_SECRET_LEN - 1]).is_err());
        assert!(JwtVerifier::new(&[b'k'; MIN_JWT_SECRET_LEN]).is_ok());
        assert!(PublishToken::new("").is_err());
        assert!(PublishToken::new(" \t").is_err());
        assert!(PublishToken::new("s").is_ok());
    }

    #[test]
    fn the_publisher_secret_is_checked_from_the_bearer_header() {
        let token = PublishToken::new("s3cret").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(token.check(&headers), Err(AuthError::Missing));
        headers.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert_eq!(token.check(&headers), Ok(()));
        headers.insert(AUTHORIZATION, "bearer s3cret".parse().unwrap());
        assert_eq!(token.check(&headers), Ok(()));
        headers.insert(AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert_eq!(token.check(&headers), Err(AuthError::Invalid));
        headers.insert(AUTHORIZATION, "Basic czNjcmV0".parse().unwrap());
        assert!(matches!(
            token.check(&headers),
            Err(AuthError::Malformed(_))
        ));
        headers.append(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(matches!(
            token.check(&headers),
            Err(AuthError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic_and_never_pass(token in ".{0,300}", dots in proptest::collection::vec(any::<u8>(), 0..3)) {
            let mut token = token;
            for dot in dots {
                let at = usize::from(dot) % (token.len() + 1);
                if token.is_char_boundary(at) {
                    token.insert(at, '.');
                }
            }
            prop_assert!(verifier().verify(&token, NOW).is_err());
        }

        #[test]
        fn any_flipped_byte_breaks_a_token(at in any::<prop::sample::Index>(), with in any::<u8>()) {
            let token = verifier().sign(&json!({"exp": NOW + 60, "channels": ["news"]}));
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != with && with.is_ascii_graphic());
            bytes[i] = with;
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(verifier().verify(&tampered, NOW).is_err());
        }
    }
}
