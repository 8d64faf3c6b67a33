//! The servers under test, seen from outside: a port for them, and whether they answer.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::process::{tail, Guard};

/// A loopback port nothing listens on right now.
pub(super) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Status code of `GET path` on the loopback port (HTTP/1.0, so the server closes).
pub(super) fn http_status(port: u16, path: &str) -> Result<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("not an HTTP response")
}

/// Waits until `GET /` on `port` answers 200.
pub(super) fn wait_ready(server: &mut Guard, what: &str, log: &Path, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        server.check_alive(what, log)?;
        if http_status(port, "/").is_ok_and(|code| code == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer on port {port} within {} s: {}", timeout.as_secs(), tail(log));
        }
        thread::sleep(Duration::from_millis(100));
    }
}
