//! The wire contract's shared encodings, as plain functions over bytes and
//! strings: the JSON envelopes and batches every JSON transport sends and its
//! clients read. No HTTP: the query strings, entity tags and header names of
//! the HTTP transports live in push-http.
//!
//! docs/protocol.md is the normative statement of the formats written here.

pub mod json;
