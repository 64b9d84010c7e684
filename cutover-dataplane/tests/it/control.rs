//! The control channel: routes, generations and drains through the client with real traffic;
//! authentication and file modes; listener idempotence and fixed listeners.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cutover_dataplane::{Client, Error, ListenerKind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::support::*;

#[tokio::test]
async fn switch_generation_drain_and_remove_with_real_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let (dp, hello) = Dp::start(tmp.path()).await;
    assert_eq!(hello.pid, std::process::id());
    assert_eq!(hello.routes, 0);
    let c = &dp.client;
    let main = c
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;

    assert_eq!(get(main, HOST, "/").await.unwrap().status, 404, "no route yet");
    assert_eq!(
        c.switch("shop", "prod", "web", "v1", vec![a.addr]).await.unwrap(),
        None
    );
    let reply = get(main, HOST, "/").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "a"));
    assert_eq!(reply.version.as_deref(), Some("v1"));
    let g1 = c.generation("shop", "prod", "web").await.unwrap().unwrap();
    assert_eq!((g1.version.as_str(), g1.upstreams.clone()), ("v1", vec![a.addr]));
    assert!(g1.admitted >= 1);

    // A request held by the upstream keeps generation 1 busy across the switch.
    let held = tokio::spawn(async move { get(main, HOST, "/hold").await });
    eventually("the held request in flight", async || {
        c.generation("shop", "prod", "web")
            .await
            .unwrap()
            .unwrap()
            .in_flight
            == 1
    })
    .await;
    let switched_out = c.switch("shop", "prod", "web", "v2", vec![b.addr]).await.unwrap();
    assert_eq!(switched_out, Some(g1.id));
    let reply = get(main, HOST, "/").await.unwrap();
    assert_eq!((reply.body.as_str(), reply.version.as_deref()), ("b", Some("v2")));
    assert_eq!(
        c.drain(g1.id, Duration::from_millis(50)).await.unwrap(),
        1,
        "still serving the held request"
    );
    a.release();
    assert_eq!(c.drain(g1.id, STEP).await.unwrap(), 0);
    let held = held.await.unwrap().unwrap();
    assert_eq!(
        (held.status, held.body.as_str()),
        (200, "a"),
        "the old generation finished its request"
    );
    assert_eq!(c.drain(424242, STEP).await.unwrap(), 0, "unknown id");

    let routes = c.routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].0, ("shop".into(), "prod".into(), "web".into()));
    assert_eq!(routes[0].1.version, "v2");
    let g2 = routes[0].1.id;
    assert_ne!(g2, g1.id);

    assert_eq!(c.remove("shop", "prod", "web").await.unwrap(), Some(g2));
    assert_eq!(get(main, HOST, "/").await.unwrap().status, 404);
    assert!(c.generation("shop", "prod", "web").await.unwrap().is_none());
    assert_eq!(c.remove("shop", "prod", "web").await.unwrap(), None);
    assert!(matches!(
        c.switch("shop", "prod", "not a label", "v", vec![]).await,
        Err(Error::Protocol { .. })
    ));
}

/// Sends one raw request line and returns the answer line as JSON.
async fn raw(data_dir: &std::path::Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(dataplane_dir(data_dir).join("control.sock"))
        .await
        .unwrap();
    s.write_all(line.as_bytes()).await.unwrap();
    s.write_all(b"\n").await.unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).await.unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[tokio::test]
async fn wrong_secret_is_refused_and_changes_nothing_and_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let (dp, _) = Dp::start(tmp.path()).await;
    let dir = dataplane_dir(tmp.path());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("control.sock")), 0o600);
    assert_eq!(mode(&dir.join("secret")), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("pid")).unwrap().trim(),
        std::process::id().to_string()
    );

    let wrong = "0".repeat(64);
    let answer = raw(
        tmp.path(),
        &format!(r#"{{"secret":"{wrong}","op":"switch","app":"shop","env":"prod","service":"web","version":"evil","upstreams":["127.0.0.1:9"]}}"#),
    )
    .await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["kind"], "refused");
    let answer = raw(tmp.path(), r#"{"op":"shutdown"}"#).await;
    assert_eq!(answer["kind"], "refused", "no secret at all");
    assert!(
        dp.client.routes().await.unwrap().is_empty(),
        "the refused switch changed nothing"
    );

    // Through the client: a data directory whose socket is this data plane's but whose secret
    // is not.
    let other = tempfile::tempdir().unwrap();
    let other_dir = dataplane_dir(other.path());
    std::fs::create_dir_all(&other_dir).unwrap();
    std::os::unix::fs::symlink(dir.join("control.sock"), other_dir.join("control.sock")).unwrap();
    std::fs::write(other_dir.join("secret"), &wrong).unwrap();
    let intruder = Client::new(other.path());
    assert!(matches!(
        intruder.switch("shop", "prod", "web", "evil", vec![]).await,
        Err(Error::Refused { .. })
    ));
    assert!(matches!(intruder.shutdown().await, Err(Error::Refused { .. })));
    assert!(dp.client.routes().await.unwrap().is_empty());

    // The right secret with an unknown op or garbage: an error answer, and it keeps serving.
    let secret = std::fs::read_to_string(dir.join("secret")).unwrap();
    let answer = raw(tmp.path(), &format!(r#"{{"secret":"{secret}","op":"explode"}}"#)).await;
    assert_eq!(
        (answer["status"].as_str(), answer["kind"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    let answer = raw(tmp.path(), "not json").await;
    assert_eq!(answer["kind"], "bad_request");
    dp.client.hello().await.unwrap();
}

#[tokio::test]
async fn listen_is_idempotent_moves_and_fixed_listeners_route_everything_to_their_route() {
    let tmp = tempfile::tempdir().unwrap();
    let (dp, _) = Dp::start(tmp.path()).await;
    let c = &dp.client;
    let any = "127.0.0.1:0".parse().unwrap();
    let main = c.listen(ListenerKind::Main, any).await.unwrap();
    assert_ne!(main.port(), 0);
    assert_eq!(
        c.listen(ListenerKind::Main, any).await.unwrap(),
        main,
        "port 0: kept"
    );
    assert_eq!(
        c.listen(ListenerKind::Main, main).await.unwrap(),
        main,
        "same addr: kept"
    );

    let api = ListenerKind::Fixed {
        app: "shop".into(),
        env: "prod".into(),
        service: "api".into(),
    };
    let fixed = c.listen(api.clone(), any).await.unwrap();
    assert_ne!(fixed, main);
    assert_eq!(c.listen(api.clone(), any).await.unwrap(), fixed);
    let up = Upstream::start("api").await;
    c.switch("shop", "prod", "api", "v1", vec![up.addr])
        .await
        .unwrap();
    for host in ["anything.example", "web.prod.shop.localhost", "127.0.0.1"] {
        let reply = get(fixed, host, "/").await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "api"), "Host {host}");
    }
    assert_eq!(
        get(main, "api.prod.shop.localhost", "/").await.unwrap().body,
        "api"
    );
    assert_eq!(get(main, "anything.example", "/").await.unwrap().status, 404);

    let hello = c.hello().await.unwrap();
    assert_eq!(hello.listeners.len(), 2);
    assert_eq!(hello.listeners[0].kind, ListenerKind::Main);
    assert_eq!(hello.listeners[0].addr, main);

    // Port 0 keeps the listener of that kind whatever the IP; a definite other address moves
    // it: the new address serves, the old one stops accepting.
    assert_eq!(
        c.listen(ListenerKind::Main, "127.0.0.2:0".parse().unwrap())
            .await
            .unwrap(),
        main
    );
    let free = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let moved = c.listen(ListenerKind::Main, free).await.unwrap();
    assert_eq!(moved, free);
    assert_eq!(
        get(moved, "api.prod.shop.localhost", "/").await.unwrap().body,
        "api"
    );
    eventually("the old main listener closed", async || {
        tokio::net::TcpStream::connect(main).await.is_err()
    })
    .await;

    c.close(api.clone()).await.unwrap();
    c.close(api).await.unwrap();
    eventually("the fixed listener closed", async || {
        tokio::net::TcpStream::connect(fixed).await.is_err()
    })
    .await;
    assert_eq!(c.hello().await.unwrap().listeners.len(), 1);
    let busy = c
        .listen(
            ListenerKind::Fixed {
                app: "shop".into(),
                env: "prod".into(),
                service: "x".into(),
            },
            moved,
        )
        .await;
    assert!(
        matches!(busy, Err(Error::Remote(ref m)) if m.contains("cannot listen")),
        "{busy:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_it_and_removes_its_socket_and_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut dp, _) = Dp::start(tmp.path()).await;
    let main = dp
        .client
        .listen(ListenerKind::Main, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dp.client.shutdown().await.unwrap();
    dp.exited().await.unwrap();
    assert!(tokio::net::TcpStream::connect(main).await.is_err());
    let dir = dataplane_dir(tmp.path());
    assert!(!dir.join("control.sock").exists());
    assert!(!dir.join("pid").exists());
    assert!(matches!(dp.client.hello().await, Err(Error::NotRunning { .. })));
}

#[tokio::test]
async fn another_user_is_refused_even_with_the_secret() {
    // The premise: CI and this suite run as root (as `scripts/test` does); only root can act as
    // another user.
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root, as the whole suite does"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (dp, _) = Dp::start(tmp.path()).await;
    let dir = dataplane_dir(tmp.path());
    let socket = dir.join("control.sock");
    let secret = std::fs::read_to_string(dir.join("secret")).unwrap();
    // Open the way to the socket: what is tested here is the uid check behind the file modes.
    for (path, mode) in [
        (tmp.path(), 0o711),
        (dir.as_path(), 0o711),
        (socket.as_path(), 0o666),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let answer = tokio::task::spawn_blocking(move || {
        // A thread of its own: Linux credentials are per thread, and this one ends here.
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
            let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            let line = format!(
                r#"{{"secret":"{secret}","op":"switch","app":"shop","env":"prod","service":"web","version":"evil","upstreams":["127.0.0.1:9"]}}"#
            );
            // The data plane may answer and close before reading (a broken pipe here).
            let _ = s.write_all(format!("{line}\n").as_bytes());
            let mut answer = String::new();
            std::io::BufReader::new(s).read_line(&mut answer).unwrap();
            answer
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["kind"], "refused", "{answer}");
    assert!(
        dp.client.routes().await.unwrap().is_empty(),
        "the other user changed nothing"
    );
}
