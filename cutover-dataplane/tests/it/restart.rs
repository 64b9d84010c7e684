//! `routes.json`: a data plane started after another was killed listens and routes the same
//! table at once, before any control plane pushes anything.

use cutover_dataplane::{Client, Error, ListenerKind, Options};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_started_after_one_was_killed_routes_the_same_table_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = KillableDp::start(tmp.path());
    let c = Client::new(tmp.path());
    eventually("the first data plane", async || c.hello().await.is_ok()).await;
    let main = c
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let web = ListenerKind::Fixed {
        app: "shop".into(),
        env: "prod".into(),
        service: "web".into(),
    };
    let fixed = c
        .listen(web.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let up = Upstream::start("a").await;
    c.switch("shop", "prod", "web", "v0", vec!["127.0.0.1:9".parse().unwrap()])
        .await
        .unwrap();
    c.switch("shop", "prod", "web", "v1", vec![up.addr])
        .await
        .unwrap();
    assert_eq!(get(main, HOST, "/").await.unwrap().body, "a");
    let before = c.generation("shop", "prod", "web").await.unwrap().unwrap();
    // A maintenance page (another environment) is part of the table too.
    let page = cutover_dataplane::GateRecord {
        app: "shop".into(),
        env: "stage".into(),
        mode: cutover_dataplane::GateKind::Maintenance,
        until_ms: 0,
        retry_after_secs: 120,
        page: "<p>later</p>".into(),
    };
    c.set_gate("shop", "stage", Some(page.clone())).await.unwrap();
    // And the flags of an environment (the Cutover-Flags header).
    let flags = std::collections::BTreeMap::from([("beta".to_owned(), "on".to_owned())]);
    c.set_flags("shop", "prod", flags.clone()).await.unwrap();

    first.kill();
    // The main listener's serving threads are not the runtime's: they see its end and close the
    // socket a moment later (a real kill takes them with the process at once).
    eventually("nothing to listen after the kill", async || {
        tokio::net::TcpStream::connect(main).await.is_err()
    })
    .await;
    assert!(
        dataplane_dir(tmp.path()).join("control.sock").exists(),
        "a kill leaves the socket file"
    );
    assert!(matches!(c.hello().await, Err(Error::NotRunning { .. })));

    let (dp, hello) = Dp::start(tmp.path()).await;
    assert_eq!(hello.routes, 1);
    let mut addrs: Vec<_> = hello.listeners.iter().map(|l| (l.kind.clone(), l.addr)).collect();
    addrs.sort_by_key(|(_, a)| *a);
    let mut expected = vec![(ListenerKind::Main, main), (web, fixed)];
    expected.sort_by_key(|(_, a)| *a);
    assert_eq!(addrs, expected);
    let reply = get(main, HOST, "/").await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str(), reply.version.as_deref()),
        (200, "a", Some("v1"))
    );
    assert_eq!(get(fixed, "whatever.example", "/").await.unwrap().body, "a");
    let after = dp
        .client
        .generation("shop", "prod", "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.version, "v1");
    assert_eq!(
        dp.client.gates().await.unwrap(),
        vec![page],
        "a restart keeps the gates"
    );
    let kept = dp.client.flags().await.unwrap();
    assert_eq!(
        (kept.len(), &kept[0].env, &kept[0].flags),
        (1, &"prod".to_owned(), &flags),
        "a restart keeps the flags"
    );
    assert_eq!(
        after.id >> 32,
        (before.id >> 32) + 1,
        "a new epoch: ids never collide"
    );

    // A second data plane refuses to start while this one serves.
    let second = cutover_dataplane::run(Options {
        data_dir: tmp.path().to_owned(),
        take_over: false,
        control_tcp: None,
    })
    .await;
    assert!(matches!(second, Err(Error::AlreadyRunning { .. })), "{second:?}");
    dp.client.hello().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_data_planes_started_at_once_one_serves_and_the_other_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    // A persisted listener both would bind.
    let (mut dp, _) = Dp::start(tmp.path()).await;
    let main = dp
        .client
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dp.client.shutdown().await.unwrap();
    dp.exited().await.unwrap();

    let start = || {
        tokio::spawn(cutover_dataplane::run(Options {
            data_dir: tmp.path().to_owned(),
            take_over: false,
            control_tcp: None,
        }))
    };
    let (a, b) = (start(), start());
    let c = Client::new(tmp.path());
    eventually("one data plane", async || a.is_finished() || b.is_finished()).await;
    let (loser, winner) = if a.is_finished() { (a, b) } else { (b, a) };
    let lost = loser.await.unwrap();
    assert!(matches!(lost, Err(Error::AlreadyRunning { .. })), "{lost:?}");
    let hello = c.hello().await.unwrap();
    assert_eq!(hello.listeners[0].addr, main);
    assert!(!winner.is_finished());
    c.shutdown().await.unwrap();
    tokio::time::timeout(STEP, winner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
