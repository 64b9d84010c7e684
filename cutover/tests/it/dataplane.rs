//! The data plane as a real process (`cutover data-plane`): started detached by
//! `ensure_running`, replaced by `upgrade` under load without a failed request, and started
//! again after a `kill -9` with its routing table. Every data-plane pid is SIGKILLed when the
//! test ends, also on panic.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_dataplane::{Error, ListenerKind, ensure_running, upgrade};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::BIN;

const HOST: &str = "web.prod.shop.localhost";

/// SIGKILLs the data planes it knows of when dropped.
#[derive(Default)]
struct Reaper(Mutex<Vec<u32>>);

impl Reaper {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap().push(pid);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().iter() {
            if alive(*pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// Whether `pid` still exists. The data planes are children of this process, reaped by a
/// thread of `ensure_running`/`upgrade` once every thread of theirs has exited (a zombie leader
/// may still have threads holding its sockets, so "not a zombie" is not enough).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process group of `pid` (field 5 of /proc/PID/stat).
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keep-alive HTTP upstream answering `a` to every request.
async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    // Read a request head (GETs without a body).
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na";
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// One GET on an open connection; returns the status, the body, and whether the server said
/// `Connection: close` (the next request then goes on a new connection).
async fn get(stream: &mut BufReader<TcpStream>) -> Result<(u16, String, bool), String> {
    let err = |e: std::io::Error| e.to_string();
    stream
        .get_mut()
        .write_all(format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .await
        .map_err(err)?;
    let mut line = String::new();
    if stream.read_line(&mut line).await.map_err(err)? == 0 {
        return Err("connection closed before an answer".into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        stream.read_line(&mut line).await.map_err(err)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let length = length.ok_or("no content-length")?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.map_err(err)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

async fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    TcpStream::connect(addr)
        .await
        .map(BufReader::new)
        .map_err(|e| format!("connect: {e}"))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Keep-alive connections the server ended with `Connection: close` (the old data plane
    /// draining); the client opens a new one, as HTTP clients do.
    reconnects: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Sends GETs until `stop`; keep-alive clients reuse their connection until the server closes it.
async fn load(addr: SocketAddr, keep_alive: bool, tally: Arc<Tally>, stop: watch::Receiver<bool>) {
    let mut conn = None;
    while !*stop.borrow() {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    tally.failures.lock().unwrap().push(e);
                    continue;
                }
            },
        };
        match get(&mut c).await {
            Ok((200, body, close)) if body == "a" => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if keep_alive && close {
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                } else if keep_alive {
                    conn = Some(c);
                }
            }
            Ok((status, body, _)) => tally.failures.lock().unwrap().push(format!("{status} {body:?}")),
            Err(e) => tally.failures.lock().unwrap().push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_process_upgrades_under_load_and_restarts_after_kill_9_with_its_routes() {
    let reaper = Reaper::default();
    let test = async {
        let tmp = tempfile::tempdir().unwrap();
        let exe = Path::new(BIN);
        let (client, first, spawned) = ensure_running(tmp.path(), exe).await.unwrap();
        reaper.add(first.pid);
        assert!(spawned);
        assert_ne!(first.pid, std::process::id());
        assert_eq!(
            process_group(first.pid),
            first.pid,
            "detached: a process group of its own"
        );
        let (_, again, spawned) = ensure_running(tmp.path(), exe).await.unwrap();
        assert!(!spawned, "a running data plane is reused");
        assert_eq!(again.pid, first.pid);

        let main = client
            .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (up, _up_task) = upstream().await;
        client
            .switch("shop", "prod", "web", "v1", vec![up])
            .await
            .unwrap();

        let tally = Arc::new(Tally::default());
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            tasks.spawn(load(main, i % 2 == 0, Arc::clone(&tally), stop.clone()));
        }
        until("load before the upgrade", Duration::from_secs(10), || {
            tally.ok.load(Ordering::Relaxed) >= 200
        })
        .await;

        let second = upgrade(tmp.path(), exe).await.unwrap();
        reaper.add(second.pid);
        assert_ne!(second.pid, first.pid);
        assert_eq!(second.took_over_from, Some(first.pid));
        until("the old data plane to exit", Duration::from_secs(20), || {
            !alive(first.pid)
        })
        .await;
        let at_exit = tally.ok.load(Ordering::Relaxed);
        until("load after the upgrade", Duration::from_secs(10), || {
            tally.ok.load(Ordering::Relaxed) >= at_exit + 200
        })
        .await;
        stop_tx.send(true).unwrap();
        while tasks.join_next().await.is_some() {}
        let failures = tally.failures.lock().unwrap().clone();
        eprintln!(
            "ok {} · keep-alive reconnects after Connection: close {} · failed {}",
            tally.ok.load(Ordering::Relaxed),
            tally.reconnects.load(Ordering::Relaxed),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "failed requests during the upgrade: {failures:?}"
        );
        let hello = client.hello().await.unwrap();
        assert_eq!(hello.pid, second.pid);
        assert_eq!(hello.listeners.len(), 1);
        assert_eq!(hello.listeners[0].addr, main, "the same port");
        assert_eq!(hello.routes, 1);

        // kill -9: nothing answers; the next ensure_running starts one that routes at once.
        Command::new("kill")
            .args(["-KILL", &second.pid.to_string()])
            .status()
            .unwrap();
        until(
            "the killed data plane to be gone",
            Duration::from_secs(10),
            || !alive(second.pid),
        )
        .await;
        let gone = client.hello().await;
        assert!(matches!(gone, Err(Error::NotRunning { .. })), "{gone:?}");
        let (_, third, spawned) = ensure_running(tmp.path(), exe).await.unwrap();
        reaper.add(third.pid);
        assert!(spawned);
        assert_eq!(third.routes, 1);
        assert_eq!(third.listeners[0].addr, main);
        let mut c = connect(main).await.unwrap();
        assert!(matches!(get(&mut c).await, Ok((200, ref body, _)) if body == "a"));

        // SIGTERM: it stops accepting, drains and exits, removing its socket and pid file.
        Command::new("kill")
            .args(["-TERM", &third.pid.to_string()])
            .status()
            .unwrap();
        until(
            "the data plane to stop on SIGTERM",
            Duration::from_secs(10),
            || !alive(third.pid),
        )
        .await;
        assert!(TcpStream::connect(main).await.is_err());
        let files = tmp.path().join("dataplane");
        assert!(!files.join("control.sock").exists() && !files.join("pid").exists());
        assert!(
            files.join("routes.json").exists(),
            "the table stays for the next start"
        );
    };
    tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .expect("the data-plane process test is bounded");
}
