//! What JSON data costs: checking a publication once (and compacting it when
//! it holds whitespace), encoding its envelope once (the value spliced, not
//! escaped into a string), and the clients' parse of an envelope; each side
//! by side with the same payload published as text.
//!
//! `cargo bench -p push-core --bench json`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use push_core::wire::json;
use push_core::{ContentKind, Message, Publication, Timestamp};

/// About 1 KiB of typical JSON: an object of records.
fn payload(pretty: bool) -> String {
    let rows: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"id":{i},"symbol":"SYM{i}","price":{}.25,"tags":["a","b"],"ok":true}}"#,
                100 + i
            )
        })
        .collect();
    let text = format!(r#"{{"rows":[{}],"next":null}}"#, rows.join(","));
    if pretty {
        text.replace(',', ", ").replace(':', ": ")
    } else {
        text
    }
}

fn message(data: &str, kind: ContentKind) -> Message {
    Message::new(
        "bench".parse().unwrap(),
        "ab.1".parse().unwrap(),
        None,
        Bytes::copy_from_slice(data.as_bytes()),
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .with_kind(kind)
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let compact = payload(false);
    let pretty = payload(true);
    let mut group = c.benchmark_group("json");
    group
        .throughput(Throughput::Bytes(compact.len() as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let compact_bytes = Bytes::from(compact.clone());
    group.bench_function("publication_text", |b| {
        b.iter(|| std::hint::black_box(Publication::new(compact_bytes.clone())));
    });
    group.bench_function("publication_json_compact", |b| {
        b.iter(|| std::hint::black_box(Publication::json(compact_bytes.clone()).unwrap()));
    });
    let pretty_bytes = Bytes::from(pretty.clone());
    group.bench_function("publication_json_pretty", |b| {
        b.iter(|| std::hint::black_box(Publication::json(pretty_bytes.clone()).unwrap()));
    });
    // A fresh message each time (made outside the timing): the envelope is
    // encoded once per message.
    for (name, kind) in [
        ("envelope_text", ContentKind::Bytes),
        ("envelope_json", ContentKind::Json),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || message(&compact, kind),
                |m| json::envelope(&m),
                BatchSize::SmallInput,
            );
        });
    }
    let text_envelope = json::envelope(&message(&compact, ContentKind::Bytes));
    let json_envelope = json::envelope(&message(&compact, ContentKind::Json));
    group.bench_function("parse_text", |b| {
        b.iter(|| json::parse_message(&text_envelope).unwrap());
    });
    group.bench_function("parse_json", |b| {
        b.iter(|| json::parse_message(&json_envelope).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
