//! The `push-server` binary, run as a user runs it: on a free port of
//! 127.0.0.1, its listening line read from stdout, its log kept when a test
//! reads it (included with `mod common;`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::support::within;

pub mod failover;

/// A running `push-server`.
pub struct Running {
    pub addr: SocketAddr,
    child: Child,
    log: Option<Arc<Mutex<Vec<String>>>>,
}

/// How to start it beyond its flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch {
    /// Keep its log (stderr) for [`Running::log`] instead of passing it on.
    pub keep_log: bool,
    /// Start it with this open-files limit (`ulimit -n`).
    pub open_files: Option<u32>,
    /// Listen here instead of 127.0.0.1:0.
    pub listen: Option<&'static str>,
}

impl Running {
    /// Starts it with `args` after `--listen 127.0.0.1:0 --log warn`.
    pub async fn start(args: &[&str]) -> Running {
        Self::launch(args, Launch::default()).await
    }

    /// Starts it with `args`, as `launch` says.
    pub async fn launch(args: &[&str], launch: Launch) -> Running {
        let binary = env!("CARGO_BIN_EXE_push-server");
        let mut command = match launch.open_files {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    binary,
                ]);
                shell
            }
            None => Command::new(binary),
        };
        command
            .args(["--listen", launch.listen.unwrap_or("127.0.0.1:0")])
            .args(["--log", "warn"])
            .args(args)
            .env_remove("PUSH_PUBLISH_TOKEN")
            .env_remove("PUSH_JWT_SECRET")
            .stdout(Stdio::piped())
            .stderr(if launch.keep_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let log = launch.keep_log.then(|| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let kept = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    kept.lock().unwrap().push(line);
                }
            });
            log
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = within("the listening line", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("push-server exited before listening"));
        let url = first
            .strip_prefix("listening on http://")
            .or_else(|| first.strip_prefix("listening on https://"))
            .unwrap_or_else(|| panic!("{first}"));
        let mut addr: SocketAddr = url.parse().unwrap();
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        Running { addr, child, log }
    }

    /// The log lines so far (with `keep_log`).
    pub fn log(&self) -> Vec<String> {
        self.log
            .as_ref()
            .map(|log| log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        within("the server to exit", self.child.wait())
            .await
            .unwrap()
    }
}

/// Runs `push-server` with `args` expecting it to refuse to start; returns
/// what it printed on stderr.
pub async fn refused(args: &[&str]) -> String {
    let output = within(
        "push-server to refuse its settings",
        Command::new(env!("CARGO_BIN_EXE_push-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("PUSH_PUBLISH_TOKEN")
            .env_remove("PUSH_JWT_SECRET")
            .output(),
    )
    .await
    .unwrap();
    assert!(!output.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
