//! The facade's router served by `push_live::serve` on a free port of 127.0.0.1,
//! for the facade's tests (included with `#[path = …] mod serving;`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use push_live::{MemoryHub, Router, RouterConfig, ServeConfig, ServeStats, Shutdown};
use tokio::task::JoinHandle;

/// A running `push_live::serve`.
pub struct Running {
    pub addr: SocketAddr,
    pub router: Router<MemoryHub>,
    pub shutdown: Shutdown,
    pub stats: Arc<ServeStats>,
    pub task: JoinHandle<io::Result<()>>,
}

/// Serves a router over a fresh memory hub.
pub async fn start(config: RouterConfig, serve: ServeConfig) -> Running {
    start_on(MemoryHub::new(), config, serve).await
}

/// Serves a router over `hub`.
pub async fn start_on(hub: MemoryHub, config: RouterConfig, serve: ServeConfig) -> Running {
    let router = Router::new(hub, config);
    let listener = push_live::bind("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = router.shutdown();
    let stats = Arc::new(ServeStats::default());
    let task = tokio::spawn(push_live::serve(
        listener,
        router.clone(),
        shutdown.clone(),
        serve,
        Some(stats.clone()),
    ));
    Running {
        addr,
        router,
        shutdown,
        stats,
        task,
    }
}
