//! What every transport reads from a request line: the query parameters, and
//! the channel the request is for. Plain strings in, typed values or a typed
//! error out, so each transport's HTTP glue stays thin and they all answer bad
//! input the same way.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use push_core::{ChannelName, Error, Start};

/// The longest query string accepted by default, in bytes: room for a
/// 4 KiB subscriber token in `?token=` (a browser's `EventSource` and
/// `WebSocket` cannot send it in a header) beside the other parameters.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 8 << 10;

/// The most parameters a query may have.
pub const MAX_PARAMETERS: usize = 16;

/// Where one `key=value` pair sits in the query: its start, the end of its
/// key (the `=` or the pair's end), and its end.
type Pair = (u32, u32, u32);

/// A query split into its pairs, by position: what [`Head`](crate::Head)
/// keeps, so that the split is made once per request however often it is
/// read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    pairs: [Pair; MAX_PARAMETERS],
    len: usize,
}

impl Split {
    /// Splits `raw` (the part after `?`).
    pub(crate) fn new(raw: &str, max_len: usize) -> Result<Split, Error> {
        if raw.len() > max_len {
            return Err(Error::invalid_query(format!(
                "the query is longer than {max_len} bytes"
            )));
        }
        let too_long = || Error::invalid_query("the query is too long");
        let mut split = Split {
            pairs: [(0, 0, 0); MAX_PARAMETERS],
            len: 0,
        };
        let mut start = 0;
        for pair in raw.split('&') {
            let end = start + pair.len();
            if !pair.is_empty() {
                let slot = split.pairs.get_mut(split.len).ok_or_else(|| {
                    Error::invalid_query(format!(
                        "the query has more than {MAX_PARAMETERS} parameters"
                    ))
                })?;
                let key_end = start + pair.find('=').unwrap_or(pair.len());
                *slot = (
                    u32::try_from(start).map_err(|_| too_long())?,
                    u32::try_from(key_end).map_err(|_| too_long())?,
                    u32::try_from(end).map_err(|_| too_long())?,
                );
                split.len += 1;
            }
            start = end + 1;
        }
        Ok(split)
    }

    /// The split of `raw` as a [`Query`]; `raw` must be what it was made from.
    pub(crate) fn of<'a>(&self, raw: &'a str) -> Query<'a> {
        Query { raw, split: *self }
    }
}

/// A request's decoded query parameters.
///
/// Unknown parameters are ignored (cache-busters such as `_=1700000000`);
/// a known one given twice is an error, since guessing which one was meant
/// could resume from the wrong place.
///
/// ```
/// use push_core::Start;
/// use push_http::Query;
///
/// let query = Query::parse(Some("since=earliest&_=123"), 1024)?;
/// assert_eq!(query.start()?, Start::Earliest);
/// assert!(Query::parse(Some("since=a&since=b"), 1024)?.start().is_err());
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    raw: &'a str,
    /// The `key=value` pairs, split once, on the stack.
    split: Split,
}

impl<'a> Query<'a> {
    /// Splits `raw` (the part after `?`) into its parameters; decoding
    /// (`+` and `%XX`) happens when a value is asked for.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it is longer than `max_len` bytes or has
    /// more than [`MAX_PARAMETERS`] parameters.
    pub fn parse(raw: Option<&'a str>, max_len: usize) -> Result<Self, Error> {
        let raw = raw.unwrap_or_default();
        Ok(Split::new(raw, max_len)?.of(raw))
    }

    /// The raw (still encoded) `(key, value)` pairs.
    fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let raw = self.raw;
        self.split.pairs[..self.split.len]
            .iter()
            .map(move |&(start, key_end, end)| {
                let (start, key_end, end) = (start as usize, key_end as usize, end as usize);
                let key = raw.get(start..key_end).unwrap_or_default();
                let value = raw.get((key_end + 1).min(end)..end).unwrap_or_default();
                (key, value)
            })
    }

    /// The value of `name`, decoded, if given once.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it is given more than once.
    pub fn get(&self, name: &str) -> Result<Option<Cow<'a, str>>, Error> {
        let mut found = None;
        for (key, value) in self.pairs() {
            if !key_is(key, name) {
                continue;
            }
            if found.is_some() {
                return Err(Error::invalid_query(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
            found = Some(decode(value));
        }
        Ok(found)
    }

    /// The raw (still encoded) value of `name`, if given: for comparing
    /// bytes without decoding.
    pub fn raw(&self, name: &str) -> Option<&'a str> {
        self.pairs()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Where the raw value of `name` is in the query string, if given: to
    /// find it again in the request without keeping this split.
    pub fn span(&self, name: &str) -> Option<std::ops::Range<usize>> {
        let value = self.raw(name)?;
        let start = value.as_ptr() as usize - self.raw.as_ptr() as usize;
        Some(start..start + value.len())
    }

    /// Where to start, from `since` or `last`: neither is live, `since=earliest`
    /// everything retained, another `since` a cursor, `last=N` the last `N`
    /// retained messages ([`Start::Last`]; `last=0` is live).
    ///
    /// # Errors
    /// [`Error::InvalidCursor`], or [`Error::InvalidQuery`] for a repeated
    /// parameter, a `last` that is not a whole number, or `since` and `last`
    /// together (which one was meant cannot be guessed).
    pub fn start(&self) -> Result<Start, Error> {
        let since = self.get("since")?;
        let Some(last) = self.get("last")? else {
            return Start::from_since(since.as_deref());
        };
        if since.is_some() {
            return Err(Error::invalid_query(
                "`since` and `last` cannot be given together",
            ));
        }
        let n = parse_whole(&last).ok_or_else(|| {
            Error::invalid_query(format!("`last` must be a whole number, not {last:?}"))
        })?;
        Ok(if n == 0 { Start::Live } else { Start::Last(n) })
    }

    /// The batch limit from `limit`: from 1 to `max`, `max` when absent (a
    /// larger value is lowered to `max`).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it is not a positive whole number.
    pub fn limit(&self, max: usize) -> Result<usize, Error> {
        Ok(self.count("limit", max)?.unwrap_or(max))
    }

    /// A whole number of seconds from `name`, at most `max` (a larger value is
    /// lowered to `max`).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it is not a whole number of seconds.
    pub fn seconds(&self, name: &str, max: Duration) -> Result<Option<Duration>, Error> {
        let Some(value) = self.get(name)? else {
            return Ok(None);
        };
        let secs: u64 = parse_whole(&value).ok_or_else(|| {
            Error::invalid_query(format!(
                "`{name}` must be a whole number of seconds, not {value:?}"
            ))
        })?;
        Ok(Some(Duration::from_secs(secs).min(max)))
    }

    /// A count from `name`, from 1 to `max` (a larger value is lowered to `max`).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it is not a positive whole number.
    pub fn count(&self, name: &str, max: usize) -> Result<Option<usize>, Error> {
        let Some(value) = self.get(name)? else {
            return Ok(None);
        };
        match parse_whole(&value) {
            Some(n) if n > 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX).min(max))),
            _ => Err(Error::invalid_query(format!(
                "`{name}` must be a positive whole number, not {value:?}"
            ))),
        }
    }
}

impl Query<'_> {
    /// A yes-or-no parameter: `true`/`1` or `false`/`0` (`None` when absent).
    ///
    /// ```
    /// use push_http::Query;
    ///
    /// let query = Query::parse(Some("store=false&presence=1"), 1024)?;
    /// assert_eq!(query.flag("store")?, Some(false));
    /// assert_eq!(query.flag("presence")?, Some(true));
    /// assert_eq!(query.flag("other")?, None);
    /// assert!(Query::parse(Some("store=no"), 1024)?.flag("store").is_err());
    /// # Ok::<(), push_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for any other value.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.get(name)?.as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(value) => Err(Error::invalid_query(format!(
                "`{name}` must be true, false, 1 or 0, not {value:?}"
            ))),
        }
    }
}

/// `true` when query key `key` (still encoded) decodes to `name`.
fn key_is(key: &str, name: &str) -> bool {
    if key.contains(['%', '+']) {
        decode(key) == name
    } else {
        key == name
    }
}

/// A query value decoded as forms are: `+` is a space, `%XX` a byte, and
/// invalid UTF-8 becomes U+FFFD. Plain values are borrowed, not copied.
fn decode(value: &str) -> Cow<'_, str> {
    if !value.contains(['%', '+']) {
        return Cow::Borrowed(value);
    }
    let decoded: String = form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    Cow::Owned(decoded)
}

/// Digits only (no sign, no spaces), saturating at `u64::MAX`.
fn parse_whole(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

/// A request target: `path`, its existing `query`, and `params` appended, as
/// the clients send it. Cursors, `earliest` and numbers need no escaping:
/// their alphabets are URL-safe.
///
/// ```
/// use push_http::path_with_params;
///
/// assert_eq!(path_with_params("/poll/a", Some("token=t"), &[("since", "1.2")]), "/poll/a?token=t&since=1.2");
/// assert_eq!(path_with_params("/poll/a", None, &[]), "/poll/a");
/// ```
pub fn path_with_params(path: &str, query: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut target = path.to_owned();
    let mut separator = '?';
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(query);
        separator = '&';
    }
    for (name, value) in params {
        target.push(separator);
        target.push_str(name);
        target.push('=');
        target.push_str(value);
        separator = '&';
    }
    target
}

/// A rule of your own for [`ChannelLocator::Custom`]: from the path and the
/// decoded query to a channel name.
pub type LocatorFn = dyn Fn(&str, &Query<'_>) -> Option<String> + Send + Sync;

/// Finds the channel a request is for, from its path and query.
///
/// The default, [`ChannelLocator::LastPathSegment`], reads `news` from
/// `/poll/news` (percent-decoded, so `encodeURIComponent("a:b")` works).
///
/// ```
/// use push_http::{ChannelLocator, Query};
///
/// let query = Query::parse(Some("channel=b"), 1024)?;
/// assert_eq!(ChannelLocator::LastPathSegment.locate("/sse/a%3Ab", &query)?.as_str(), "a:b");
/// assert_eq!(ChannelLocator::query("channel").locate("/sse", &query)?.as_str(), "b");
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ChannelLocator {
    /// The last segment of the path.
    #[default]
    LastPathSegment,
    /// A query parameter.
    QueryParameter(Cow<'static, str>),
    /// Always this channel.
    Fixed(ChannelName),
    /// Your own rule, from the path and the decoded query.
    Custom(Arc<LocatorFn>),
}

impl ChannelLocator {
    /// The channel named by query parameter `name`.
    pub fn query(name: impl Into<Cow<'static, str>>) -> Self {
        ChannelLocator::QueryParameter(name.into())
    }

    /// A rule of your own.
    pub fn custom(
        rule: impl Fn(&str, &Query<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        ChannelLocator::Custom(Arc::new(rule))
    }

    /// The channel for a request with this path and query.
    ///
    /// # Errors
    /// [`Error::InvalidChannelName`] when there is none or it is invalid.
    pub fn locate(&self, path: &str, query: &Query<'_>) -> Result<ChannelName, Error> {
        let missing = || Error::InvalidChannelName {
            reason: "the request names no channel",
        };
        match self {
            ChannelLocator::LastPathSegment => {
                let segment = path.rsplit('/').next().unwrap_or_default();
                let decoded = if segment.contains('%') {
                    percent_decode_str(segment).decode_utf8().map_err(|_| {
                        Error::InvalidChannelName {
                            reason: "only A-Z a-z 0-9 and _ . : @ - are allowed",
                        }
                    })?
                } else {
                    Cow::Borrowed(segment)
                };
                if decoded.is_empty() {
                    return Err(missing());
                }
                ChannelName::new(&decoded)
            }
            ChannelLocator::QueryParameter(name) => {
                ChannelName::new(&query.get(name)?.ok_or_else(missing)?)
            }
            ChannelLocator::Fixed(channel) => Ok(channel.clone()),
            ChannelLocator::Custom(rule) => {
                ChannelName::new(&rule(path, query).ok_or_else(missing)?)
            }
        }
    }
}

impl fmt::Debug for ChannelLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelLocator::LastPathSegment => f.write_str("LastPathSegment"),
            ChannelLocator::QueryParameter(name) => write!(f, "QueryParameter({name:?})"),
            ChannelLocator::Fixed(channel) => write!(f, "Fixed({channel:?})"),
            ChannelLocator::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(raw: &str) -> Query<'_> {
        Query::parse(Some(raw), DEFAULT_MAX_QUERY_BYTES).unwrap()
    }

    #[test]
    fn seconds_and_counts() {
        let max = Duration::from_secs(120);
        assert_eq!(
            query("timeout=5").seconds("timeout", max).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            query("timeout=0").seconds("timeout", max).unwrap(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            query("timeout=9999").seconds("timeout", max).unwrap(),
            Some(max)
        );
        assert_eq!(
            query("timeout=99999999999999999999999")
                .seconds("timeout", max)
                .unwrap(),
            Some(max)
        );
        assert_eq!(query("").seconds("timeout", max).unwrap(), None);
        for bad in [
            "timeout=",
            "timeout=-1",
            "timeout=1.5",
            "timeout=%201",
            "timeout=ten",
        ] {
            assert!(
                matches!(
                    query(bad).seconds("timeout", max),
                    Err(Error::InvalidQuery { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(query("limit=7").count("limit", 100).unwrap(), Some(7));
        assert_eq!(query("limit=700").count("limit", 100).unwrap(), Some(100));
        assert!(query("limit=0").count("limit", 100).is_err());
        assert_eq!(query("limit=7").limit(100).unwrap(), 7);
        assert_eq!(query("").limit(100).unwrap(), 100);
    }

    #[test]
    fn too_long_and_repeated() {
        let long = "a=".to_owned() + &"b".repeat(DEFAULT_MAX_QUERY_BYTES);
        let err = Query::parse(Some(&long), DEFAULT_MAX_QUERY_BYTES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid query: the query is longer than 8192 bytes"
        );
        let err = query("since=earliest&since=earliest").start().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid query: parameter `since` is given more than once"
        );
        let many = vec!["a=1"; MAX_PARAMETERS + 1].join("&");
        let err = Query::parse(Some(&many), DEFAULT_MAX_QUERY_BYTES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid query: the query has more than 16 parameters"
        );
    }

    #[test]
    fn keys_and_values_decode_like_forms() {
        let q = query("a+b=c+d&%73ince=earl%69est&x=%ff&flag&=v");
        assert_eq!(q.get("a b").unwrap().as_deref(), Some("c d"));
        assert_eq!(q.start().unwrap(), Start::Earliest);
        assert_eq!(q.get("x").unwrap().as_deref(), Some("\u{fffd}"));
        assert_eq!(q.get("flag").unwrap().as_deref(), Some(""));
        assert_eq!(q.get("missing").unwrap(), None);
        assert_eq!(q.raw("x"), Some("%ff"));
        assert_eq!(q.span("x"), Some(29..32));
        assert_eq!(q.span("nothing"), None);
        assert_eq!(q.get("").unwrap().as_deref(), Some("v"));
        assert!(query("since=a&%73ince=b").get("since").is_err());
        assert_eq!(query("a=b=c").get("a").unwrap().as_deref(), Some("b=c"));
    }

    #[test]
    fn last_is_a_start() {
        assert_eq!(query("last=2").start().unwrap(), Start::Last(2));
        assert_eq!(query("last=0").start().unwrap(), Start::Live);
        assert_eq!(
            query("last=99999999999999999999999").start().unwrap(),
            Start::Last(u64::MAX)
        );
        for bad in ["last=", "last=-1", "last=x", "last=1&last=1"] {
            let err = query(bad).start().unwrap_err();
            assert_eq!(err.code(), "invalid_query", "{bad}");
        }
        let err = query("since=earliest&last=2").start().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid query: `since` and `last` cannot be given together"
        );
    }

    #[test]
    fn since_is_decoded() {
        assert_eq!(query("since=earl%69est").start().unwrap(), Start::Earliest);
        assert!(matches!(
            query("since=").start(),
            Err(Error::InvalidCursor { .. })
        ));
    }

    #[test]
    fn locating_channels() {
        let empty = query("");
        let at = |path: &str| ChannelLocator::LastPathSegment.locate(path, &empty);
        assert_eq!(at("/poll/news").unwrap().as_str(), "news");
        assert_eq!(at("news").unwrap().as_str(), "news");
        assert_eq!(at("/a/b%40c").unwrap().as_str(), "b@c");
        for bad in ["/poll/", "/", "", "/poll/a%2Fb", "/poll/%ff", "/poll/a b"] {
            assert!(
                matches!(at(bad), Err(Error::InvalidChannelName { .. })),
                "{bad:?}"
            );
        }
        let fixed = ChannelLocator::Fixed("x".parse().unwrap());
        assert_eq!(fixed.locate("/anything", &empty).unwrap().as_str(), "x");
        let custom =
            ChannelLocator::custom(|path, _| path.strip_prefix("/u/").map(|s| format!("user:{s}")));
        assert_eq!(custom.locate("/u/42", &empty).unwrap().as_str(), "user:42");
        assert!(custom.locate("/x", &empty).is_err());
        assert!(ChannelLocator::query("c").locate("/", &empty).is_err());
    }

    proptest! {
        #[test]
        fn lookups_agree_with_a_full_form_parse(raw in "[a-c=&%+0-9A-F]{0,30}") {
            let Ok(q) = Query::parse(Some(&raw), DEFAULT_MAX_QUERY_BYTES) else {
                return Ok(());
            };
            for name in ["a", "b", "c", "a b", ""] {
                let all: Vec<_> = form_urlencoded::parse(raw.as_bytes())
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
                    .collect();
                match q.get(name) {
                    Ok(value) => prop_assert_eq!(value.map(Cow::into_owned), all.first().cloned()),
                    Err(_) => prop_assert!(all.len() > 1),
                }
            }
        }

        #[test]
        fn arbitrary_requests_never_panic(path: String, raw: String) {
            if let Ok(q) = Query::parse(Some(&raw), DEFAULT_MAX_QUERY_BYTES) {
                let _ = q.start();
                let _ = q.seconds("timeout", Duration::from_secs(60));
                let _ = q.count("limit", 10);
                let _ = q.raw("since");
                let _ = ChannelLocator::LastPathSegment.locate(&path, &q);
            }
        }
    }
}
