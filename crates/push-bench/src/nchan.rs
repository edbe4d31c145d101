//! Nchan, the nginx module that serves all four techniques, as a peer: found
//! or installed (Debian's `nginx` and `libnginx-mod-nchan`), configured from
//! `nchan/nginx.conf`, and run in a scratch directory.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("../nchan/nginx.conf");
const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Where nginx and the module are, installing them when possible.
pub(crate) fn find_or_install() -> Result<PathBuf, String> {
    if let Some(nginx) = find() {
        return Ok(nginx);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root || crate::which("apt-get").is_none() {
        return Err(
            "nginx with Nchan is not installed (apt-get install nginx libnginx-mod-nchan)".into(),
        );
    }
    eprintln!("installing nginx and libnginx-mod-nchan for the Nchan peer …");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx", "libnginx-mod-nchan"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    find().ok_or_else(|| "installing nginx with Nchan failed".into())
}

fn find() -> Option<PathBuf> {
    let nginx = crate::which("nginx").or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.exists().then_some(sbin)
    })?;
    Path::new(MODULE).exists().then_some(nginx)
}

/// A running nginx: its master process, address and scratch directory.
pub(crate) struct Nchan {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
}

impl Nchan {
    pub(crate) fn start(nginx: &Path, workers: usize) -> Result<Nchan, String> {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("push-bench-nchan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = CONFIG
            .replace("{PREFIX}", &dir.display().to_string())
            .replace("{PORT}", &port.to_string())
            .replace("{MODULE}", MODULE)
            .replace("{WORKERS}", &workers.to_string());
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let nchan = Nchan { child, addr, dir };
        let began = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if began.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(nchan.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx did not start listening: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nchan)
    }
}

impl Drop for Nchan {
    fn drop(&mut self) {
        // SIGTERM to the master ends the workers too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
