//! Counting live connections: held long polls, open event streams, open
//! WebSockets. One counter per handler, one guard per connection.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many connections a handler holds right now.
#[derive(Debug, Default)]
pub struct LiveCount(AtomicUsize);

impl LiveCount {
    /// The count now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One live connection: counted in its handler's [`LiveCount`] from
/// [`Live::new`] until dropped (answered, ended, or dropped by hyper when
/// the client hung up). It keeps the handler's shared state `T` reachable,
/// in one pointer, for the connection's own use.
///
/// ```
/// use std::sync::Arc;
/// use push_http::{Live, LiveCount};
///
/// #[derive(Default)]
/// struct Shared { live: LiveCount }
/// impl AsRef<LiveCount> for Shared {
///     fn as_ref(&self) -> &LiveCount { &self.live }
/// }
///
/// let shared = Arc::new(Shared::default());
/// let one = Live::new(&shared);
/// assert_eq!(shared.live.get(), 1);
/// drop(one);
/// assert_eq!(shared.live.get(), 0);
/// ```
#[derive(Debug)]
pub struct Live<T: AsRef<LiveCount>>(Arc<T>);

impl<T: AsRef<LiveCount>> Live<T> {
    /// Counts one more connection of `shared`.
    pub fn new(shared: &Arc<T>) -> Self {
        (**shared).as_ref().0.fetch_add(1, Ordering::Relaxed);
        Live(shared.clone())
    }
}

impl<T: AsRef<LiveCount>> Deref for Live<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<LiveCount>> Drop for Live<T> {
    fn drop(&mut self) {
        (*self.0).as_ref().0.fetch_sub(1, Ordering::Relaxed);
    }
}
