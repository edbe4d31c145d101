//! Cursors: where a subscriber is in a channel's history, and where it starts.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The longest string a [`Cursor`] displays as: 16 hex digits of epoch, a dot,
/// two 20-digit numbers and a dash.
pub const MAX_CURSOR_LEN: usize = 16 + 1 + 20 + 1 + 20;

/// The word that asks for everything a channel still retains, in place of a cursor.
pub const EARLIEST: &str = "earliest";

/// One incarnation of a channel's history.
///
/// A channel gets a fresh epoch whenever its history starts over: an in-memory
/// hub restarted, a channel freed and created again, a Redis stream that expired
/// or was flushed. A cursor from another epoch is recognised as such and answered
/// with a [`Reset`](crate::Reset), instead of being misread as a position in
/// the new history.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(u64);

impl Epoch {
    /// Wraps a raw epoch value.
    pub const fn new(value: u64) -> Self {
        Epoch(value)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The `n`th epoch of a sequence drawn from `seed` (SplitMix64): with a
    /// random seed per process, epochs differ across channels, incarnations
    /// and processes. What every hub uses to make fresh epochs.
    ///
    /// ```
    /// use push_core::Epoch;
    ///
    /// assert_ne!(Epoch::derived(7, 0), Epoch::derived(7, 1));
    /// assert_eq!(Epoch::derived(7, 1), Epoch::derived(7, 1));
    /// ```
    pub const fn derived(seed: u64, n: u64) -> Self {
        let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Epoch(z ^ (z >> 31))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({:x})", self.0)
    }
}

/// A place in one epoch of a channel's history: two numbers, compared in order.
///
/// The in-memory hub numbers messages 1, 2, 3, … in `major` and leaves `minor`
/// at 0; a Redis stream id `1700000000000-3` is `major` 1700000000000 and
/// `minor` 3. Position `0-0` is "before the first message".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    major: u64,
    minor: u64,
}

impl Position {
    /// Before the first message of an epoch.
    pub const ZERO: Position = Position { major: 0, minor: 0 };

    /// A position from its two parts.
    pub const fn new(major: u64, minor: u64) -> Self {
        Position { major, minor }
    }

    /// The major part (a sequence number, or a Redis stream id's milliseconds).
    pub const fn major(self) -> u64 {
        self.major
    }

    /// The minor part (0, or a Redis stream id's sequence).
    pub const fn minor(self) -> u64 {
        self.minor
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

/// A message's id, and where a subscriber resumes: an epoch plus a position in it.
///
/// On the wire it is an opaque string (`Display` / `FromStr`), safe unescaped in
/// a URL query, an HTTP header, an SSE `id:` field and JSON. Clients must not
/// build or interpret it; this crate's form is `EPOCH.MAJOR[-MINOR]` (lowercase
/// hex epoch, decimal parts, no leading zeros, `-MINOR` only when it is not 0),
/// and parsing accepts exactly the strings `Display` writes, so two cursors are
/// equal exactly when their strings are.
///
/// Cursors of one epoch are totally ordered; cursors of different epochs are
/// not comparable (`partial_cmp` is `None`).
///
/// ```
/// use push_core::{Cursor, Epoch, Position};
///
/// let c = Cursor::new(Epoch::new(0x5eed), Position::new(1700000000000, 3));
/// assert_eq!(c.to_string(), "5eed.1700000000000-3");
/// assert_eq!("5eed.1700000000000-3".parse::<Cursor>()?, c);
/// assert!("5eed.01".parse::<Cursor>().is_err()); // not canonical
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    epoch: Epoch,
    position: Position,
}

impl Cursor {
    /// A cursor from its parts.
    pub const fn new(epoch: Epoch, position: Position) -> Self {
        Cursor { epoch, position }
    }

    /// The history this cursor belongs to.
    pub const fn epoch(self) -> Epoch {
        self.epoch
    }

    /// The place in that history.
    pub const fn position(self) -> Position {
        self.position
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self.epoch == other.epoch).then(|| self.position.cmp(&other.position))
    }
}

impl Cursor {
    /// The cursor's string form in a stack buffer: what `Display` writes,
    /// without the formatting machinery or an allocation (every answer of
    /// every transport carries a cursor).
    pub fn text(self) -> CursorText {
        let mut text = CursorText {
            bytes: [0; MAX_CURSOR_LEN],
            len: 0,
        };
        text.push_hex(self.epoch.0);
        text.push(b'.');
        text.push_decimal(self.position.major);
        if self.position.minor != 0 {
            text.push(b'-');
            text.push_decimal(self.position.minor);
        }
        text
    }
}

/// A cursor's string form, on the stack (see [`Cursor::text`]).
#[derive(Clone, Copy)]
pub struct CursorText {
    bytes: [u8; MAX_CURSOR_LEN],
    len: usize,
}

impl CursorText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters a-f, '.' and '-' are ever pushed.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn push_hex(&mut self, value: u64) {
        let digits = (64 - value.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            let nibble = (value >> (shift * 4)) & 0xf;
            self.push(b"0123456789abcdef"[usize::try_from(nibble).unwrap_or(0)]);
        }
    }

    fn push_decimal(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
            if value == 0 {
                break;
            }
        }
        for &digit in &digits[n..] {
            self.push(digit);
        }
    }
}

impl fmt::Debug for CursorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({self})")
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidCursor { reason };
        if s.len() > MAX_CURSOR_LEN {
            return Err(invalid("longer than any cursor"));
        }
        let (epoch, position) = s
            .split_once('.')
            .ok_or(invalid("no '.' between epoch and position"))?;
        let (major, minor) = match position.split_once('-') {
            Some((major, minor)) => (major, Some(minor)),
            None => (position, None),
        };
        let epoch = parse_canonical(epoch, 16).map_err(invalid)?;
        let major = parse_canonical(major, 10).map_err(invalid)?;
        let minor = match minor {
            None => 0,
            Some(minor) => match parse_canonical(minor, 10).map_err(invalid)? {
                0 => return Err(invalid("a zero minor part is written by omitting it")),
                n => n,
            },
        };
        Ok(Cursor::new(Epoch(epoch), Position::new(major, minor)))
    }
}

/// Parses a `u64` written in `radix` with lowercase digits and no leading zeros.
fn parse_canonical(digits: &str, radix: u32) -> Result<u64, &'static str> {
    if digits.is_empty() {
        return Err("a number is missing");
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err("a number has leading zeros");
    }
    if !digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (radix == 16 && matches!(b, b'a'..=b'f')))
    {
        return Err(if radix == 16 {
            "the epoch is not lowercase hexadecimal"
        } else {
            "the position is not decimal"
        });
    }
    u64::from_str_radix(digits, radix).map_err(|_| "a number is too large")
}

/// Where a new subscription or read starts.
///
/// On the wire this is the `since` query parameter: absent means
/// [`Start::Live`], `earliest` means [`Start::Earliest`], anything else must be
/// a [`Cursor`]; or the `last` parameter, [`Start::Last`].
///
/// ```
/// use push_core::Start;
///
/// assert_eq!(Start::from_since(None)?, Start::Live);
/// assert_eq!(Start::from_since(Some("earliest"))?, Start::Earliest);
/// assert!(matches!(Start::from_since(Some("9.41"))?, Start::After(_)));
/// assert!(Start::from_since(Some("yesterday")).is_err());
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Start {
    /// Only what is published from now on.
    #[default]
    Live,
    /// Everything the channel still retains, then live.
    Earliest,
    /// Everything after this cursor, then live; a [`Gap`](crate::Gap) or
    /// [`Reset`](crate::Reset) first when the history no longer reaches back
    /// that far.
    After(Cursor),
    /// The last `n` messages the channel retains (fewer when fewer are
    /// retained; `0` is [`Start::Live`]), then live: a dashboard's initial
    /// state in one request. Never a gap or a reset: it asks for what is
    /// retained. On the wire this is the `last` query parameter.
    Last(u64),
}

impl Start {
    /// Reads a `since` parameter: `None` is [`Start::Live`].
    ///
    /// # Errors
    /// [`Error::InvalidCursor`] for a string that is neither `earliest` nor a
    /// cursor.
    pub fn from_since(since: Option<&str>) -> Result<Self, Error> {
        since.map_or(Ok(Start::Live), str::parse)
    }

    /// The `since` parameter that asks for this start (`None` for live and
    /// for [`Start::Last`], which is the `last` parameter instead).
    pub fn to_since(&self) -> Option<String> {
        match self {
            Start::Live | Start::Last(_) => None,
            Start::Earliest => Some(EARLIEST.to_owned()),
            Start::After(cursor) => Some(cursor.to_string()),
        }
    }
}

impl Start {
    /// The query parameter that asks for this start, as the clients send it:
    /// `since` (a cursor or `earliest`), `last` for [`Start::Last`], none
    /// for live.
    ///
    /// ```
    /// use push_core::Start;
    ///
    /// assert_eq!(Start::Last(3).to_param(), Some(("last", "3".to_owned())));
    /// assert_eq!(Start::Earliest.to_param(), Some(("since", "earliest".to_owned())));
    /// assert_eq!(Start::Live.to_param(), None);
    /// ```
    pub fn to_param(&self) -> Option<(&'static str, String)> {
        match self {
            Start::Last(n) => Some(("last", n.to_string())),
            _ => self.to_since().map(|since| ("since", since)),
        }
    }
}

impl From<Cursor> for Start {
    fn from(cursor: Cursor) -> Self {
        Start::After(cursor)
    }
}

impl FromStr for Start {
    type Err = Error;

    /// `earliest` or a cursor.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == EARLIEST {
            Ok(Start::Earliest)
        } else {
            s.parse().map(Start::After)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursor(epoch: u64, major: u64, minor: u64) -> Cursor {
        Cursor::new(Epoch(epoch), Position::new(major, minor))
    }

    #[test]
    fn display_forms() {
        assert_eq!(cursor(0, 0, 0).to_string(), "0.0");
        assert_eq!(cursor(0xabc, 42, 0).to_string(), "abc.42");
        assert_eq!(
            cursor(1, 1_700_000_000_000, 3).to_string(),
            "1.1700000000000-3"
        );
        let widest = cursor(u64::MAX, u64::MAX, u64::MAX).to_string();
        assert_eq!(widest.len(), MAX_CURSOR_LEN);
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, reason) in [
            ("", "no '.' between epoch and position"),
            ("abc", "no '.' between epoch and position"),
            (".1", "a number is missing"),
            ("a.", "a number is missing"),
            ("a.1-", "a number is missing"),
            ("0a.1", "a number has leading zeros"),
            ("a.01", "a number has leading zeros"),
            ("A.1", "the epoch is not lowercase hexadecimal"),
            ("a.1e3", "the position is not decimal"),
            ("a.+1", "the position is not decimal"),
            ("a.1-0", "a zero minor part is written by omitting it"),
            ("a.1.2", "the position is not decimal"),
            ("a.1-2-3", "the position is not decimal"),
            ("10000000000000000.1", "a number is too large"),
            ("a.18446744073709551616", "a number is too large"),
            (&"1".repeat(100), "longer than any cursor"),
        ] {
            match input.parse::<Cursor>() {
                Err(Error::InvalidCursor { reason: got }) => assert_eq!(got, reason, "{input:?}"),
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn order_holds_within_an_epoch_only() {
        assert!(cursor(1, 5, 0) < cursor(1, 5, 1));
        assert!(cursor(1, 5, 9) < cursor(1, 6, 0));
        assert_eq!(cursor(1, 5, 0).partial_cmp(&cursor(2, 5, 0)), None);
    }

    #[test]
    fn start_parses_since() {
        assert_eq!(Start::from_since(None).unwrap(), Start::Live);
        assert_eq!("earliest".parse::<Start>().unwrap(), Start::Earliest);
        assert_eq!(
            "ff.7".parse::<Start>().unwrap(),
            Start::After(cursor(0xff, 7, 0))
        );
        assert!("".parse::<Start>().is_err());
        assert!("Earliest".parse::<Start>().is_err());
        for start in [Start::Live, Start::Earliest, Start::After(cursor(3, 4, 5))] {
            assert_eq!(
                Start::from_since(start.to_since().as_deref()).unwrap(),
                start
            );
        }
    }

    /// A cursor's text (`true`), or one flaw away from one (`false` unless
    /// the flaw changed nothing, as uppercasing a text without letters).
    fn texts() -> impl Strategy<Value = (String, bool)> {
        let minor = prop_oneof![Just(0u64), any::<u64>()];
        (any::<u64>(), any::<u64>(), minor, 0..10usize).prop_map(|(epoch, major, minor, flaw)| {
            let good = cursor(epoch, major, minor).to_string();
            let text = match flaw {
                0 => good.to_uppercase(),
                1 => format!("0{good}"),
                2 => format!("{good}-0"),
                3 => good.replacen('.', "", 1),
                _ => good.clone(),
            };
            let canonical = text == good;
            (text, canonical)
        })
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(epoch: u64, major: u64, minor: u64) {
            let c = cursor(epoch, major, minor);
            prop_assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
            let expected = if minor == 0 { format!("{epoch:x}.{major}") } else { format!("{epoch:x}.{major}-{minor}") };
            let text = c.text();
            prop_assert_eq!(text.as_str(), expected);
        }

        /// A cursor's text parses back to it, and the near misses of that
        /// text (uppercase hex, a leading zero, a zero minor part, no '.')
        /// are refused: every case asserts one or the other.
        #[test]
        fn canonical_text_parses_and_near_misses_are_refused((text, canonical) in texts()) {
            match text.parse::<Cursor>() {
                Ok(c) => {
                    prop_assert!(canonical, "{text:?} is not canonical but was accepted");
                    prop_assert_eq!(c.to_string(), text);
                }
                Err(_) => prop_assert!(!canonical, "{text:?} is canonical but was refused"),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = s.parse::<Cursor>();
            let _ = s.parse::<Start>();
        }

        #[test]
        fn string_order_is_not_needed_but_position_order_is_total(
            a in (0u64..3, 0u64..3), b in (0u64..3, 0u64..3)
        ) {
            let (x, y) = (cursor(7, a.0, a.1), cursor(7, b.0, b.1));
            prop_assert_eq!(x.partial_cmp(&y), Some((a.0, a.1).cmp(&(b.0, b.1))));
        }
    }
}
