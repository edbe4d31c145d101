//! The JSON wire format's readers (push-core's `wire::json`), as the
//! polling, long-polling and SSE clients read answers: batches, message
//! envelopes, signals and error bodies; and JSON data as publishers send it
//! (`Publication::json`, which checks and compacts it).
//!
//! Checks: whatever reads, written again by the server's encoder, reads
//! back the same in every field; compacted JSON data is the same JSON
//! value, on one line, and compacting it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::wire::json;
use push_core::{Publication, Signal};
use push_fuzz::{assert_same_batch, assert_same_message};
use push_http::ClientError;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = json::parse_batch(data) {
        let bytes = json::batch(&batch);
        let again = json::parse_batch(&bytes).expect("a batch reads back");
        assert_same_batch(&batch, &again);
    }
    if let Ok(message) = json::parse_message(data) {
        let bytes = json::envelope(&message);
        let again = json::parse_message(&bytes).expect("an envelope reads back");
        assert_same_message(&message, &again);
    }
    for kind in ["gap", "reset"] {
        if let Ok(signal) = json::parse_signal(kind, data) {
            assert_eq!(matches!(signal, Signal::Gap(_)), kind == "gap");
            let bytes = json::signal(&signal);
            assert_eq!(json::parse_signal(kind, &bytes).ok(), Some(signal));
        }
    }
    if let Some((code, message)) = json::parse_error(data) {
        let bytes = json::error(&code, &message);
        assert_eq!(json::parse_error(&bytes), Some((code, message)));
    }
    // An error answer, as every client reads it.
    let err = ClientError::status(400, data);
    let _ = (err.is_fatal(), err.may_have_happened(), err.to_string());
    if let Ok(value) = serde_json::from_slice::<Value>(data)
        && let Ok(message) = json::parse_envelope(&value)
    {
        let again = json::parse_message(&json::envelope(&message)).expect("reads back");
        assert_same_message(&message, &again);
    }
    // JSON data as a publisher sends it.
    if let Ok(publication) = Publication::json(data.to_vec()) {
        let compact = publication.data();
        let value: Value = serde_json::from_slice(data).expect("checked as JSON");
        assert_eq!(serde_json::from_slice::<Value>(compact).ok(), Some(value));
        assert!(!compact.contains(&b'\n'), "compact JSON is one line");
        let again = Publication::json(compact.clone()).expect("compact JSON is JSON");
        assert_eq!(again.data(), compact);
    }
});
