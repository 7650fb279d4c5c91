//! Helpers shared by the tests that run the `meshgate` binary: a tiny upstream on threads, a
//! blocking HTTP/1.1 GET, and `meshgate run` as a child process.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

/// A tiny HTTP/1.1 upstream on its own threads, answering its name. Paths starting with `/slow`
/// take 1.5 s. Counts requests as they start.
pub struct Tiny {
    pub addr: SocketAddr,
    pub started: Arc<AtomicUsize>,
}

pub fn tiny(name: &'static str) -> Tiny {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                if path.starts_with("/slow") {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}", name.len());
                let _ = stream.write_all(resp.as_bytes());
            });
        }
    });
    Tiny { addr, started }
}

/// `GET path` with `Connection: close`; `(status, body)`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {buf:?}")))?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn config(port: u16, upstream: SocketAddr, watch: bool) -> String {
    format!(
        "runtime: {{workers: 2, watch_config: {watch}, drain_timeout: 5s}}
listeners: [{{name: main, address: \"127.0.0.1:{port}\"}}]
services: [{{name: s, url: \"http://{upstream}\"}}]
routes: [{{name: r, service: s, paths: [\"/\"]}}]
"
    )
}

/// `meshgate run` as a child process, killed if the test ends while it runs.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(yaml: impl Fn(u16) -> String) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, yaml(port)).unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start meshgate run");
        let mut g = Gateway { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), config, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&g.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = g.child.try_wait().unwrap() {
                panic!("meshgate exited early with {status}:\n{}", g.log());
            }
            assert!(Instant::now() < deadline, "meshgate did not listen on {} in time:\n{}", g.addr, g.log());
            std::thread::sleep(Duration::from_millis(2));
        }
        g
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits until `GET /` answers `body`, or panics after 5 s.
    pub fn wait_for_body(&self, body: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok((200, b)) = get(self.addr, "/")
                && b == body
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: still not answered by {body}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_for_log(&self, needle: &str, after: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.get(after..).is_some_and(|l| l.contains(needle)) {
                return log[after..].to_owned();
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "meshgate did not exit within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
