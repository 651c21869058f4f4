//! Helpers shared by the integration tests that run `featherguard serve`: a server process on a
//! free loopback port, killed on drop, and plain HTTP/1.1 requests to it (no client library, so
//! the tests see exactly what a client on the wire sees).
// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every wait on the server is bounded: a hang fails the test instead of blocking CI.
pub const WAIT: Duration = Duration::from_secs(30);

/// A scratch file path under a folder private to this test process.
pub fn tmp(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fg-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Runs `featherguard [before...] serve --listen 127.0.0.1:PORT [serve_args...]` as `cmd`
    /// configures it (env, config), stderr to `log`, and waits until `/healthz` answers.
    pub fn start(mut cmd: Command, serve_args: &[&str], log: PathBuf) -> Server {
        // A port the kernel just handed out is free; the server binds it right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(serve_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut s = Server {
            child: cmd.spawn().unwrap(),
            port,
            log,
        };
        let deadline = Instant::now() + WAIT;
        while s.get("/healthz").is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("server exited at start ({status}): {}", s.stderr());
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a fresh connection: (status, body).
    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(WAIT))?;
        c.set_write_timeout(Some(WAIT))?;
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        c.read_to_string(&mut resp)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Chunked bodies (metrics) keep their chunk-size lines; tests only search them by line.
        Ok((status, body.to_string()))
    }

    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path, "")
    }

    /// GET `path` as JSON: (status, value).
    pub fn json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.stderr()));
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, v)
    }

    /// Resident memory of the server, read from outside it: (total, anon) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|k| k.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("RssAnon:"))
    }
}
