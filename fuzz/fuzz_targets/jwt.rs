//! The subscriber token reader (push-server's `JwtVerifier`: the JWT's
//! three parts, its header and its claims) and the `Authorization` header
//! reader (`bearer`).
//!
//! The input is a token. It is verified as it is (almost always refused at
//! the signature), then its header and payload are signed with the
//! verifier's key and verified again, so that the header and claims
//! decoders see everything the fuzzer makes.
//!
//! Checks: a token is accepted only with an HS256 header, before its `exp`
//! and not before its `nbf`; the claims' patterns match as documented; a
//! token the verifier signs itself is accepted.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use libfuzzer_sys::fuzz_target;
use push_core::ChannelName;
use push_server::auth::{AuthError, JwtVerifier, MAX_TOKEN_LEN, bearer};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &[u8; 32] = b"fuzzing-secret-of-thirty-two-by!";
const NOWS: [u64; 4] = [0, 1_700_000_000, 1_800_000_000, u64::MAX];

fn sign(header: &str, payload: &str) -> String {
    let signed = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

fn part(text: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
}

fn check(verifier: &JwtVerifier, token: &str) {
    for now in NOWS {
        let Ok(claims) = verifier.verify(token, now) else {
            continue;
        };
        let mut parts = token.split('.');
        let header = parts
            .next()
            .and_then(part)
            .expect("an accepted header is JSON");
        assert_eq!(header["alg"], "HS256");
        assert!(header.get("crit").is_none());
        let payload = parts
            .next()
            .and_then(part)
            .expect("accepted claims are JSON");
        assert!(
            now < claims.expires,
            "accepted at {now}, expired at {}",
            claims.expires
        );
        if let Some(nbf) = payload.get("nbf").and_then(Value::as_u64) {
            assert!(now >= nbf);
        }
        // The patterns: exact names, or prefixes ending in `*`.
        for (patterns, claim) in [
            (&claims.subscribe, "channels"),
            (&claims.publish, "publish"),
        ] {
            let listed: Vec<&str> = payload
                .get(claim)
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for name in listed.iter().chain(&["news", "room:1", "a"]) {
                let Ok(channel) = name.trim_end_matches('*').parse::<ChannelName>() else {
                    continue;
                };
                let expected = listed.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => channel.as_str().starts_with(prefix),
                    None => *p == channel.as_str(),
                });
                assert_eq!(
                    patterns.allows(&channel),
                    expected,
                    "{name} against {listed:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = JwtVerifier::new(SECRET).expect("a 32-byte secret");
    check(&verifier, token);
    // Signed with the key: the header and claims decoders take over.
    let mut parts = token.splitn(3, '.');
    let (header, payload) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let signed = sign(header, payload);
    check(&verifier, &signed);
    // JSON claims, signed by the verifier itself, are accepted while valid.
    if let Ok(claims @ Value::Object(_)) = serde_json::from_str::<Value>(token) {
        let token = verifier.sign(&claims);
        for now in NOWS {
            let result = verifier.verify(&token, now);
            let exp = claims.get("exp").and_then(Value::as_u64);
            if let (Some(exp), None) = (exp, claims.get("nbf"))
                && token.len() <= MAX_TOKEN_LEN
            {
                if now < exp && claims.get("channels").is_none() && claims.get("publish").is_none()
                {
                    assert!(result.is_ok(), "{token} at {now}: {result:?}");
                }
                if now >= exp {
                    assert_eq!(result.err(), Some(AuthError::Expired));
                }
            }
        }
    }
    // As an `Authorization` header.
    if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        if let Ok(Some(given)) = bearer(&headers) {
            assert_eq!(given, token.trim());
        }
    }
});
