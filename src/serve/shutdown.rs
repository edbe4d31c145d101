//! The handle that ends a push service: always built (the router and the
//! handlers take its token), with or without the `serve` feature.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The handle that shuts a push service down: cancel it (from a signal
/// handler, say) and [`serve`](crate::serve()) stops accepting, ends every stream and socket
/// gracefully, waits for them up to its grace period, and returns.
///
/// Get one from [`Router::shutdown`](crate::Router::shutdown), or, for a
/// service of your own, make one and hand its [`token`](Self::token) to your
/// handlers' `with_shutdown` (and [`track`](Self::track) your WebSocket
/// handlers' `socket_tasks()`):
///
/// ```
/// use push_live::{MemoryHub, Shutdown};
/// use push_live::sse::{SseConfig, SseHandler};
///
/// let shutdown = Shutdown::new();
/// let sse = SseHandler::new(
///     MemoryHub::new(),
///     SseConfig::default().with_shutdown(shutdown.token().clone()),
/// );
/// # let _ = sse;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: Vec<TaskTracker>,
}

impl Shutdown {
    /// A handle with a token of its own.
    pub fn new() -> Self {
        Shutdown::default()
    }

    pub(crate) fn with_token(token: CancellationToken) -> Self {
        Shutdown {
            token,
            tasks: Vec::new(),
        }
    }

    /// Makes [`serve`](crate::serve()) also wait, on shutdown, for these tasks (a
    /// WebSocket handler's `socket_tasks()`: its sockets outlive their HTTP
    /// connections).
    pub fn track(&mut self, tasks: TaskTracker) {
        self.tasks.push(tasks);
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The token that is cancelled when the shutdown starts, for your own
    /// long-lived work.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves once every task it tracks (each WebSocket) has ended.
    pub(super) async fn tasks_done(&self) {
        for tasks in &self.tasks {
            tasks.close();
            tasks.wait().await;
        }
    }

    /// Shuts down under a host server other than [`serve`](crate::serve())
    /// (axum's, say): triggers the shutdown, then resolves once every task it
    /// tracks (each WebSocket, whose task outlives its HTTP connection) has
    /// ended, or after `grace`, whichever comes first. Returns whether all
    /// ended in time. [`Router::graceful_shutdown`](crate::Router::graceful_shutdown)
    /// is this, for a router's handle.
    pub async fn finish(&self, grace: Duration) -> bool {
        self.trigger();
        tokio::time::timeout(grace, self.tasks_done()).await.is_ok()
    }
}
