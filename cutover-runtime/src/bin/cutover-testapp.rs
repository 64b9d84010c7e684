//! A tiny HTTP service for the runtime's integration tests (and for trying
//! the process runtime by hand). Needs nothing but this binary.
//!
//! Listens on 127.0.0.1:`$PORT` and answers:
//! - `/health`: 200, or 503 when `UNHEALTHY=1`;
//! - `/`: `$CUTOVER_VERSION`;
//! - `/pid`: its own pid;
//! - `/slow?ms=N`: 200 after N ms;
//! - `/exit?code=N`: answers, then exits with code N (default 0).
//!
//! Logs each request to stdout. On SIGTERM it says so and exits 0, unless
//! `IGNORE_TERM=1`. Rejected: a python3 one-liner, which a user's machine
//! may not have.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("PORT is not set to a port number"))?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let version = std::env::var("CUTOVER_VERSION").unwrap_or_default();
    println!(
        "testapp listening on 127.0.0.1:{port} version={version} pid={}",
        std::process::id()
    );
    if unhealthy() {
        eprintln!("UNHEALTHY=1: /health will answer 503");
    }
    let mut term = signal(SignalKind::terminate())?;
    let ignore_term = std::env::var("IGNORE_TERM").is_ok_and(|v| v == "1");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    if let Err(err) = serve(stream).await {
                        eprintln!("request failed: {err}");
                    }
                });
            }
            _ = term.recv() => {
                if ignore_term {
                    println!("received SIGTERM, ignoring it (IGNORE_TERM=1)");
                } else {
                    println!("received SIGTERM, exiting");
                    return Ok(());
                }
            }
        }
    }
}

fn unhealthy() -> bool {
    std::env::var("UNHEALTHY").is_ok_and(|v| v == "1")
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    println!("GET {target}");
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (status, body) = match path {
        "/health" if unhealthy() => ("503 Service Unavailable", "unhealthy\n".to_owned()),
        "/health" => ("200 OK", "ok\n".to_owned()),
        "/" => ("200 OK", std::env::var("CUTOVER_VERSION").unwrap_or_default()),
        "/pid" => ("200 OK", std::process::id().to_string()),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(param("ms").unwrap_or(100))).await;
            ("200 OK", "slow\n".to_owned())
        }
        "/exit" => ("200 OK", "bye\n".to_owned()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    if path == "/exit" {
        let code = param("code").unwrap_or(0);
        println!("exiting with code {code} as asked");
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    Ok(())
}
