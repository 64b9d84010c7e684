//! Hand-over to a newer data plane under load: no request fails, the old one exits, the new one
//! serves the same ports and routes, and switches sent meanwhile are never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cutover_dataplane::ListenerKind;
use tokio::sync::watch;

use crate::support::*;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Keep-alive connections the server closed after an answer (`Connection: close`), before
    /// the next request was sent; the client then opens a new one.
    reconnects: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
    fn check(&self, r: Result<Reply, String>) {
        match r {
            Ok(r) if r.status == 200 && r.body == "a" => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => self.fail(format!("answer {} {:?}", r.status, r.body)),
            Err(e) => self.fail(e),
        }
    }
}

async fn keep_alive_client(addr: std::net::SocketAddr, tally: Arc<Tally>, stop: watch::Receiver<bool>) {
    let mut conn = match Conn::open(addr).await {
        Ok(c) => c,
        Err(e) => return tally.fail(e),
    };
    while !*stop.borrow() {
        if conn.closed().await {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            conn = match Conn::open(addr).await {
                Ok(c) => c,
                Err(e) => return tally.fail(e),
            };
        }
        // Any error here, also a connection closed under a request already sent, is a failure.
        tally.check(conn.get(HOST, "/").await.map_err(|(e, _)| e));
    }
}

async fn new_connection_client(addr: std::net::SocketAddr, tally: Arc<Tally>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        tally.check(get(addr, HOST, "/").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_under_load_drops_no_request_and_keeps_ports_and_routes() {
    let test = async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut old, first) = Dp::start(tmp.path()).await;
        let c = old.client.clone();
        let main = c
            .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let web = ListenerKind::Fixed {
            app: "shop".into(),
            env: "prod".into(),
            service: "web".into(),
        };
        let fixed = c.listen(web, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let up = Upstream::start("a").await;
        c.switch("shop", "prod", "web", "v0", vec![up.addr])
            .await
            .unwrap();
        let old_generation = c
            .switch("shop", "prod", "web", "v1", vec![up.addr])
            .await
            .unwrap()
            .unwrap();

        let tally = Arc::new(Tally::default());
        let (stop_tx, stop) = watch::channel(false);
        let mut load = tokio::task::JoinSet::new();
        for i in 0..8 {
            let addr = if i % 4 == 3 { fixed } else { main };
            if i % 2 == 0 {
                load.spawn(keep_alive_client(addr, Arc::clone(&tally), stop.clone()));
            } else {
                load.spawn(new_connection_client(addr, Arc::clone(&tally), stop.clone()));
            }
        }
        // The control plane keeps switching during the hand-over; the last switch must stick.
        let switcher = {
            let c = c.clone();
            let stop = stop.clone();
            let addr = up.addr;
            tokio::spawn(async move {
                let mut n = 0u32;
                while !*stop.borrow() {
                    n += 1;
                    if let Err(e) = c
                        .switch("shop", "prod", "web", &format!("s{n}"), vec![addr])
                        .await
                    {
                        return Err(format!("switch s{n}: {e} ({e:?})"));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(format!("s{n}"))
            })
        };
        eventually("load before the hand-over", async || {
            tally.ok.load(Ordering::Relaxed) >= 300
        })
        .await;

        let hold = cutover_dataplane::GateRecord {
            app: "shop".into(),
            env: "stage".into(),
            mode: cutover_dataplane::GateKind::Hold,
            until_ms: 4_102_444_800_000,
            retry_after_secs: 5,
            page: "p".into(),
        };
        c.set_gate("shop", "stage", Some(hold.clone())).await.unwrap();
        let flags = std::collections::BTreeMap::from([("beta".to_owned(), "25%".to_owned())]);
        c.set_flags("shop", "prod", flags.clone()).await.unwrap();
        let (mut new, second) = Dp::start_with(tmp.path(), true, |h| h.took_over_from.is_some()).await;
        assert_eq!(second.took_over_from, Some(first.pid));
        old.exited()
            .await
            .expect("the old data plane exits cleanly after its hand-over");
        assert_eq!(
            c.drain(old_generation, STEP).await.unwrap(),
            0,
            "a generation of the predecessor is drained once it is gone"
        );
        let at_exit = tally.ok.load(Ordering::Relaxed);
        eventually("load after the hand-over", async || {
            tally.ok.load(Ordering::Relaxed) >= at_exit + 300
        })
        .await;
        stop_tx.send(true).unwrap();
        while load.join_next().await.is_some() {}
        let last = switcher
            .await
            .unwrap()
            .expect("no switch failed during the hand-over");

        let failures = tally.failures.lock().unwrap().clone();
        eprintln!(
            "ok {} · keep-alive reconnects after Connection: close {} · failed {}",
            tally.ok.load(Ordering::Relaxed),
            tally.reconnects.load(Ordering::Relaxed),
            failures.len()
        );
        assert!(failures.is_empty(), "failed requests: {failures:?}");

        let hello = new.client.hello().await.unwrap();
        let mut addrs: Vec<_> = hello.listeners.iter().map(|l| l.addr).collect();
        addrs.sort();
        let mut expected = vec![main, fixed];
        expected.sort();
        assert_eq!(addrs, expected, "the same ports");
        assert_eq!(hello.routes, 1);
        let g = new
            .client
            .generation("shop", "prod", "web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.version, last, "the last switch was not lost");
        assert_eq!(
            new.client.gates().await.unwrap(),
            vec![hold],
            "a hand-over keeps the gates"
        );
        let kept = new.client.flags().await.unwrap();
        assert_eq!(
            (kept.len(), &kept[0].flags),
            (1, &flags),
            "a hand-over keeps the flags"
        );
        assert!(g.admitted > 0 || g.in_flight > 0 || tally.ok.load(Ordering::Relaxed) > at_exit);
        let reply = get(main, HOST, "/").await.unwrap();
        assert_eq!(reply.version.as_deref(), Some(last.as_str()));
        new.client.shutdown().await.unwrap();
        new.exited().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the hand-over test is bounded");
}

#[tokio::test]
async fn an_aborted_hand_over_leaves_the_old_data_plane_serving_and_mutable() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let tmp = tempfile::tempdir().unwrap();
    let (dp, _) = Dp::start(tmp.path()).await;
    let c = &dp.client;
    let main = c
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let up = Upstream::start("a").await;
    c.switch("shop", "prod", "web", "v1", vec![up.addr])
        .await
        .unwrap();

    // A "successor" that asks for the hand-over, reads the offer, and never commits.
    let secret = std::fs::read_to_string(dataplane_dir(tmp.path()).join("secret")).unwrap();
    let stream = tokio::net::UnixStream::connect(dataplane_dir(tmp.path()).join("control.sock"))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("{{\"secret\":\"{secret}\",\"op\":\"hand_over\"}}\n").as_bytes())
        .await
        .unwrap();
    let mut offer = String::new();
    stream.read_line(&mut offer).await.unwrap();
    let offer: serde_json::Value = serde_json::from_str(&offer).unwrap();
    assert_eq!(offer["status"], "ok");
    assert_eq!(offer["value"]["routes"][0]["version"], "v1");

    // Meanwhile mutations are refused (the successor would miss them), even after the retry;
    // reads and traffic go on.
    let refused = c.switch("shop", "prod", "web", "v2", vec![up.addr]).await;
    assert!(
        matches!(refused, Err(cutover_dataplane::Error::HandedOver)),
        "{refused:?}"
    );
    assert_eq!(c.routes().await.unwrap()[0].1.version, "v1");
    assert_eq!(get(main, HOST, "/").await.unwrap().body, "a");

    // The successor goes away: the freeze is lifted.
    drop(stream);
    eventually("mutations accepted again", async || {
        c.switch("shop", "prod", "web", "v2", vec![up.addr]).await.is_ok()
    })
    .await;
    let reply = get(main, HOST, "/").await.unwrap();
    assert_eq!(reply.version.as_deref(), Some("v2"));
    assert!(c.hello().await.unwrap().took_over_from.is_none());
}
