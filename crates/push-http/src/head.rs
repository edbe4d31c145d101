//! The one request reader: a request's head with its query split once, and
//! the readings every transport makes of it (channel, start, limit).

use http::request::Parts;
use http::{HeaderMap, Method, Uri};
use push_core::{ChannelName, Error, Start};

use crate::ChannelLocator;
use crate::query::{Query, Split};

/// A request's head, its query split once.
///
/// Whoever sees a request first makes its `Head`: the handler itself, the
/// facade's router, or a server's own authorisation in front of it. Every
/// later reader (a token check, the channel's locator, the transport) reads
/// the same split, so a request's query is parsed once however many look at
/// it. A query that cannot be split (too long, too many parameters) is kept
/// as its error, for the handler to answer in its own order (a wrong method
/// is still a 405 first).
///
/// ```
/// use push_core::Start;
/// use push_http::{ChannelLocator, Head};
///
/// let (parts, ()) = http::Request::get("/poll/news?since=earliest&limit=5").body(())?.into_parts();
/// let head = Head::read(parts, 1024);
/// assert_eq!(head.channel(&ChannelLocator::default())?.as_str(), "news");
/// assert_eq!(head.query()?.start()?, Start::Earliest);
/// assert_eq!(head.query()?.limit(100)?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Head {
    parts: Parts,
    split: Result<Split, Error>,
}

impl Head {
    /// Splits the query of `parts`, at most `max_query_bytes` long.
    pub fn read(parts: Parts, max_query_bytes: usize) -> Head {
        let split = Split::new(parts.uri.query().unwrap_or_default(), max_query_bytes);
        Head { parts, split }
    }

    /// The decoded query.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when it could not be split (the same error
    /// every time it is asked).
    pub fn query(&self) -> Result<Query<'_>, Error> {
        match &self.split {
            Ok(split) => Ok(split.of(self.parts.uri.query().unwrap_or_default())),
            Err(err) => Err(Error::invalid_query(invalid_reason(err))),
        }
    }

    /// The channel `locator` finds in the path and query.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] or [`Error::InvalidChannelName`].
    pub fn channel(&self, locator: &ChannelLocator) -> Result<ChannelName, Error> {
        locator.locate(self.parts.uri.path(), &self.query()?)
    }

    /// Where to start, from `since` (see [`Query::start`]).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] or [`Error::InvalidCursor`].
    pub fn start(&self) -> Result<Start, Error> {
        self.query()?.start()
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// The request's target.
    pub fn uri(&self) -> &Uri {
        &self.parts.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The whole head.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The head, given back.
    pub fn into_parts(self) -> Parts {
        self.parts
    }
}

/// The reason of an [`Error::InvalidQuery`], to hand out again.
fn invalid_reason(err: &Error) -> String {
    match err {
        Error::InvalidQuery { reason } => reason.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, max: usize) -> Head {
        let (parts, ()) = http::Request::get(target).body(()).unwrap().into_parts();
        Head::read(parts, max)
    }

    #[test]
    fn a_bad_query_is_the_same_error_each_time() {
        let head = head("/sse/a?since=1&x=yyyyyyyyyy", 8);
        let first = head.query().unwrap_err().to_string();
        assert_eq!(first, "invalid query: the query is longer than 8 bytes");
        assert_eq!(head.start().unwrap_err().to_string(), first);
        assert_eq!(
            head.channel(&ChannelLocator::default())
                .unwrap_err()
                .to_string(),
            first
        );
    }

    #[test]
    fn readings_come_from_the_one_split() {
        let head = head("/sse/a%3Ab?since=earliest&token=t", 1024);
        assert_eq!(
            head.channel(&ChannelLocator::default()).unwrap().as_str(),
            "a:b"
        );
        assert_eq!(head.start().unwrap(), Start::Earliest);
        assert_eq!(
            head.query().unwrap().get("token").unwrap().as_deref(),
            Some("t")
        );
        assert_eq!(head.method(), Method::GET);
        assert_eq!(head.uri().path(), "/sse/a%3Ab");
        assert!(head.headers().is_empty());
    }
}
