//! The query and request-line readers (push-http's `Query`, `Head` and
//! `ChannelLocator`), as every transport reads a request.
//!
//! Checks: a value's span is where its raw text is; `Head` reads exactly
//! what `Query` reads; a start written back as the clients send it reads
//! back the same; limits and durations stay within their maximum; a
//! channel found is a valid name that parses back to itself.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use push_core::{ChannelName, Error, Start};
use push_http::{ChannelLocator, DEFAULT_MAX_QUERY_BYTES, Head, Query, path_with_params};

const NAMES: [&str; 9] = [
    "since", "last", "limit", "timeout", "channel", "token", "format", "_", "",
];

/// Every reading a transport makes, as comparable text.
fn readings(query: &Query<'_>, path: &str) -> Vec<String> {
    let mut out = vec![format!("{:?}", query.start())];
    out.push(format!("{:?}", query.limit(100)));
    out.push(format!(
        "{:?}",
        query.seconds("timeout", Duration::from_secs(30))
    ));
    out.push(format!("{:?}", query.count("last", 1000)));
    for name in NAMES {
        out.push(format!("{:?} {:?}", query.get(name), query.raw(name)));
    }
    for locator in [ChannelLocator::default(), ChannelLocator::query("channel")] {
        out.push(format!("{:?}", locator.locate(path, query)));
    }
    out
}

fn check_query(raw: &str, path: &str) -> Result<Vec<String>, Error> {
    let query = Query::parse(Some(raw), DEFAULT_MAX_QUERY_BYTES)?;
    for name in NAMES {
        match (query.raw(name), query.span(name)) {
            (Some(value), Some(span)) => assert_eq!(&raw[span], value),
            (None, None) => {}
            other => panic!("raw and span disagree: {other:?}"),
        }
    }
    if let Ok(limit) = query.limit(100) {
        assert!((1..=100).contains(&limit));
    }
    if let Ok(Some(secs)) = query.seconds("timeout", Duration::from_secs(30)) {
        assert!(secs <= Duration::from_secs(30));
    }
    if let Ok(start) = query.start() {
        // As the clients ask for it.
        let params: Vec<(&str, String)> = start.to_param().into_iter().collect();
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let target = path_with_params("/poll/a", None, &params);
        let again = target.split_once('?').map(|(_, q)| q);
        let again = Query::parse(again, DEFAULT_MAX_QUERY_BYTES).unwrap();
        let expected = match start {
            Start::Last(0) => Start::Live,
            other => other,
        };
        assert_eq!(again.start().unwrap(), expected, "{target}");
    }
    for locator in [ChannelLocator::default(), ChannelLocator::query("channel")] {
        if let Ok(channel) = locator.locate(path, &query) {
            assert_eq!(ChannelName::new(channel.as_str()).ok(), Some(channel));
        }
    }
    Ok(readings(&query, path))
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, raw) = target.split_once('?').unwrap_or((target, ""));
    let direct = check_query(raw, path);
    // The same through a request head, when the target is one.
    let Ok(request) = http::Request::get(target).body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let (path, raw) = (
        parts.uri.path().to_owned(),
        parts.uri.query().unwrap_or_default().to_owned(),
    );
    let head = Head::read(parts, DEFAULT_MAX_QUERY_BYTES);
    match (head.query(), check_query(&raw, &path)) {
        (Ok(query), Ok(expected)) => {
            assert_eq!(readings(&query, &path), expected);
            assert_eq!(format!("{:?}", head.start()), expected[0]);
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("Head and Query disagree: {a:?} / {b:?}"),
    }
    if raw == target.split_once('?').map_or("", |(_, q)| q)
        && path == target.split_once('?').map_or(target, |(p, _)| p)
    {
        assert_eq!(direct.is_ok(), head.query().is_ok());
    }
});
