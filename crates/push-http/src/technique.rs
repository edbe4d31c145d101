//! The four techniques, named once for the router, the server, its metrics
//! and its command line.

use std::fmt;
use std::str::FromStr;

/// A technique for pushing updates: what a subscribing request uses.
///
/// ```
/// use push_http::Technique;
///
/// assert_eq!("longpoll".parse::<Technique>(), Ok(Technique::LongPoll));
/// assert_eq!(Technique::Sse.as_str(), "sse");
/// assert_eq!(Technique::ALL.map(Technique::as_str), ["poll", "longpoll", "sse", "ws"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Technique {
    /// Short (interval) polling: `GET /poll/{channel}`.
    Poll,
    /// Long polling: `GET /longpoll/{channel}`.
    LongPoll,
    /// Server-Sent Events: `GET /sse/{channel}`.
    Sse,
    /// WebSockets: `GET /ws/{channel}` and `GET /ws`.
    Ws,
}

impl Technique {
    /// Every technique, in this order (also their [`index`](Self::index)).
    pub const ALL: [Technique; 4] = [
        Technique::Poll,
        Technique::LongPoll,
        Technique::Sse,
        Technique::Ws,
    ];

    /// Its name: the first segment of its paths, its label in metrics and
    /// JSON, its name on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Technique::Poll => "poll",
            Technique::LongPoll => "longpoll",
            Technique::Sse => "sse",
            Technique::Ws => "ws",
        }
    }

    /// Its place in [`ALL`](Self::ALL), for arrays indexed by technique.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Technique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the four techniques.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown technique {0:?}: one of poll, longpoll, sse, ws")]
pub struct UnknownTechnique(pub String);

impl FromStr for Technique {
    type Err = UnknownTechnique;

    fn from_str(name: &str) -> Result<Self, UnknownTechnique> {
        Technique::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| UnknownTechnique(name.to_owned()))
    }
}
