//! Validated names: channels, events and idempotency keys.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::Error;

/// The longest channel name, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;

/// The longest event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Event names starting with this are the protocol's own (SSE's `push.gap` and
/// `push.reset`): no publisher may use them, so a client can never mistake a
/// message for a signal.
pub const RESERVED_EVENT_PREFIX: &str = "push.";

/// A channel's name: 1 to 128 bytes of `A-Z a-z 0-9 _ . : @ -`.
///
/// The alphabet is safe in a URL path, a Redis key and a log line without
/// escaping. Cloning is cheap, so every message can carry its channel: names
/// up to 23 bytes are stored inline (no allocation to make one from a request,
/// no reference count to clone one), longer ones behind a reference count.
///
/// ```
/// use push_core::ChannelName;
///
/// let news: ChannelName = "news.europe".parse()?;
/// assert_eq!(news.as_str(), "news.europe");
/// assert!("".parse::<ChannelName>().is_err());
/// assert!("a/b".parse::<ChannelName>().is_err());
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(SmolStr);

impl ChannelName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`Error::InvalidChannelName`] when it is empty, longer than
    /// [`MAX_CHANNEL_NAME_LEN`] bytes, or holds a byte outside the alphabet.
    pub fn new(name: &str) -> Result<Self, Error> {
        Self::validate(name)?;
        Ok(ChannelName(SmolStr::new(name)))
    }

    fn validate(name: &str) -> Result<(), Error> {
        let reason = if name.is_empty() {
            "it is empty"
        } else if name.len() > MAX_CHANNEL_NAME_LEN {
            "it is longer than 128 bytes"
        } else if !name.bytes().all(is_channel_byte) {
            "only A-Z a-z 0-9 and _ . : @ - are allowed"
        } else {
            return Ok(());
        };
        Err(Error::InvalidChannelName { reason })
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

/// The name of a message's event type, as in SSE's `event:` field: 1 to 128
/// bytes of UTF-8 without control characters.
///
/// Rejecting CR, LF and NUL here means no event name can ever break a wire
/// format's framing (an SSE field, a header); the other control characters go
/// too, as no legitimate name needs them.
///
/// ```
/// use push_core::EventName;
///
/// let ev: EventName = "price-update".parse()?;
/// assert_eq!(ev.as_str(), "price-update");
/// assert!("two\nlines".parse::<EventName>().is_err());
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`Error::InvalidEventName`] when it is empty, longer than
    /// [`MAX_EVENT_NAME_LEN`] bytes, holds a control character, or starts with
    /// the reserved [`RESERVED_EVENT_PREFIX`].
    pub fn new(name: &str) -> Result<Self, Error> {
        let reason = if name.is_empty() {
            "it is empty"
        } else if name.len() > MAX_EVENT_NAME_LEN {
            "it is longer than 128 bytes"
        } else if name.starts_with(RESERVED_EVENT_PREFIX) {
            "names starting with `push.` are reserved for the protocol's own events"
        } else if name.chars().any(char::is_control) {
            "control characters (CR, LF, NUL, …) are not allowed"
        } else {
            return Ok(EventName(Arc::from(name)));
        };
        Err(Error::InvalidEventName { reason })
    }

    /// One of the protocol's own names (`push.join`, …), which
    /// [`EventName::new`] refuses to publishers.
    pub(crate) fn protocol(name: &'static str) -> Self {
        EventName(Arc::from(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key a publisher sends with a publish so that a retry of it is
/// recognised (`Idempotency-Key` on HTTP, `key` in a `push.v1` publish): 1
/// to 255 bytes of visible ASCII (`!` to `~`), as Stripe's and the IETF
/// draft's keys are (a UUID is the usual choice).
///
/// A publish whose key was already published in the hub's window is not
/// stored again: it answers the first one's cursor.
///
/// ```
/// use push_core::IdempotencyKey;
///
/// let key: IdempotencyKey = "4f8c2a1e-7b3d-4e9a-9c6f-2d1b8e5a7c30".parse()?;
/// assert_eq!(key.as_str().len(), 36);
/// assert!("".parse::<IdempotencyKey>().is_err());
/// assert!("a b".parse::<IdempotencyKey>().is_err());
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// Validates `key`.
    ///
    /// # Errors
    /// [`Error::InvalidIdempotencyKey`] when it is empty, longer than
    /// [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, or holds a byte outside `!`..=`~`.
    pub fn new(key: &str) -> Result<Self, Error> {
        let reason = if key.is_empty() {
            "it is empty"
        } else if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            "it is longer than 255 bytes"
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            "only visible ASCII (! to ~) is allowed"
        } else {
            return Ok(IdempotencyKey(Arc::from(key)));
        };
        Err(Error::InvalidIdempotencyKey { reason })
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_like {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $ty::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self, Error> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                $ty::new(&s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

string_like!(ChannelName);
string_like!(EventName);
string_like!(IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn channel_names() {
        for ok in ["a", "news", "user:42", "a.b-c_d@e", &"x".repeat(128)] {
            assert_eq!(ChannelName::new(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "it is empty"),
            (&"x".repeat(129), "it is longer than 128 bytes"),
            ("a b", "only A-Z a-z 0-9 and _ . : @ - are allowed"),
            ("a/b", "only A-Z a-z 0-9 and _ . : @ - are allowed"),
            ("é", "only A-Z a-z 0-9 and _ . : @ - are allowed"),
            ("a\0", "only A-Z a-z 0-9 and _ . : @ - are allowed"),
        ] {
            match ChannelName::new(bad) {
                Err(Error::InvalidChannelName { reason }) => assert_eq!(reason, why, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn idempotency_keys() {
        for ok in ["a", "4f8c2a1e-7b3d", "!~", &"k".repeat(255)] {
            assert_eq!(IdempotencyKey::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a b", "\t", "é", &"k".repeat(256)] {
            assert!(
                matches!(
                    IdempotencyKey::new(bad),
                    Err(Error::InvalidIdempotencyKey { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn event_names() {
        for ok in ["message", "price update", "ünïcode", &"e".repeat(128)] {
            assert_eq!(EventName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "a\rb",
            "a\nb",
            "a\0b",
            "tab\there",
            "push.gap",
            &"e".repeat(129),
        ] {
            assert!(EventName::new(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn channel_name_accepts_exactly_its_alphabet(s in ".{0,140}") {
            let valid = !s.is_empty() && s.len() <= 128 && s.bytes().all(is_channel_byte);
            prop_assert_eq!(ChannelName::new(&s).is_ok(), valid);
        }

        #[test]
        fn event_name_never_holds_line_breaks(s in "\\PC{0,10}[\r\n\0]?\\PC{0,10}") {
            if let Ok(name) = EventName::new(&s) {
                prop_assert!(!name.as_str().contains(['\r', '\n', '\0']));
            }
        }
    }
}
