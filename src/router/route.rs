//! Which route a request path asks for: classified once, by its first
//! segment, for the router and for any server in front of it.

use push_http::Technique;

/// What a request path asks a [`Router`](crate::Router) for.
///
/// A server in front of the router (authorisation, metrics) classifies a
/// request once with [`Route::of`], reads its head once with
/// [`Router::head`](crate::Router::head), and hands both to
/// [`Router::serve`](crate::Router::serve): nothing is classified or parsed
/// twice.
///
/// ```
/// use push_live::Route;
/// use push_live::http::Technique;
///
/// assert_eq!(Route::of("/sse/news"), Some(Route::Subscribe(Technique::Sse)));
/// assert_eq!(Route::of("/ws"), Some(Route::Commands));
/// assert_eq!(Route::of("/pub/news"), Some(Route::Publish));
/// assert_eq!(Route::of("/elsewhere"), None);
/// // Classified by its first segment; the router answers 404 to a path
/// // that does not name exactly one channel.
/// assert_eq!(Route::of("/sse/a/b"), Some(Route::Subscribe(Technique::Sse)));
/// assert!(!Route::names_one_channel("/sse/a/b"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /pub/{channel}`.
    Publish,
    /// `GET /{technique}/{channel}`: `/poll/…`, `/longpoll/…`, `/sse/…`,
    /// `/ws/…`.
    Subscribe(Technique),
    /// `GET /ws`: the WebSocket command endpoint (`push.v1`).
    Commands,
    /// `GET /presence/{channel}`: who is subscribed now.
    Presence,
}

impl Route {
    /// The route `path` asks for, by its first segment (`/pub/…`,
    /// `/presence/…`, `/poll/…`, `/longpoll/…`, `/sse/…`, `/ws/…`), or
    /// `/ws` alone; `None`
    /// for any other path.
    pub fn of(path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let Some((first, _)) = rest.split_once('/') else {
            return (rest == "ws").then_some(Route::Commands);
        };
        match first {
            "pub" => Some(Route::Publish),
            "presence" => Some(Route::Presence),
            "poll" => Some(Route::Subscribe(Technique::Poll)),
            "longpoll" => Some(Route::Subscribe(Technique::LongPoll)),
            "sse" => Some(Route::Subscribe(Technique::Sse)),
            "ws" => Some(Route::Subscribe(Technique::Ws)),
            _ => None,
        }
    }

    /// The technique that serves it: `None` for publishing; WebSockets for
    /// the command endpoint.
    pub fn technique(self) -> Option<Technique> {
        match self {
            Route::Publish | Route::Presence => None,
            Route::Subscribe(technique) => Some(technique),
            Route::Commands => Some(Technique::Ws),
        }
    }

    /// Whether `path` (of a route other than [`Route::Commands`]) has
    /// exactly one non-empty segment after the route's own:
    /// `/sse/news`, not `/sse/`, nor `/sse/a/b`.
    pub fn names_one_channel(path: &str) -> bool {
        let channel = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(_, channel)| channel);
        !channel.is_empty() && !channel.contains('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_first_segment_and_one_channel() {
        assert_eq!(Route::of("/pub/news"), Some(Route::Publish));
        assert_eq!(Route::of("/pub/news/more"), Some(Route::Publish));
        assert!(!Route::names_one_channel("/pub/news/more"));
        assert!(!Route::names_one_channel("/pub/"));
        assert!(Route::names_one_channel("/pub/news"));
        assert_eq!(Route::of("/pub"), None);
        assert_eq!(Route::of("/other/news"), None);
        assert_eq!(Route::of(""), None);
        assert_eq!(Route::of("/ws"), Some(Route::Commands));
        assert_eq!(Route::of("/ws/news"), Some(Route::Subscribe(Technique::Ws)));
        assert_eq!(
            Route::of("/longpoll/news"),
            Some(Route::Subscribe(Technique::LongPoll))
        );
        assert_eq!(
            Route::of("/sse/a%2Fb"),
            Some(Route::Subscribe(Technique::Sse))
        );
        assert!(Route::names_one_channel("/sse/a%2Fb"));
        assert_eq!(Route::Commands.technique(), Some(Technique::Ws));
        assert_eq!(Route::Publish.technique(), None);
        assert_eq!(Route::of("/presence/news"), Some(Route::Presence));
        assert_eq!(Route::Presence.technique(), None);
    }
}
