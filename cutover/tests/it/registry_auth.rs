//! Registries that want an account, beyond htpasswd with `registry.username`
//! (`registry.rs`): the token protocol of the tag check, credentials read from
//! Docker's `config.json`, and Swarm services created with the account.
//!
//! The token protocol is tested twice: against Debian's docker-registry with
//! `auth: token` and a token server in the test that signs ES256 JWTs with a
//! key whose self-signed certificate is the registry's `rootcertbundle` (dockerd
//! pushes through it, Cutover's tag check reads the tag with a token), and
//! against a loopback HTTP server that speaks the protocol for the manifest HEAD
//! only, where the realm can be moved to another host name to show the account
//! is not sent there.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::registry::{ImageCleanup, fixture, pushed_image, release_and_wait, start_with_account};

/// One request as the fake servers see it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
}

type Handler = dyn Fn(&Seen) -> String + Send + Sync;

/// A loopback HTTP/1.1 server answering each request with `handler`'s whole answer;
/// stopped when dropped.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(handler: Arc<Handler>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (handler, seen) = (handler.clone(), seen.clone());
                    std::thread::spawn(move || serve(conn, &*handler, &seen));
                }
            })
        };
        FakeServer {
            port,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keep-alive connections: one answer per request until the client closes.
fn serve(conn: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut authorization = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(v.trim().to_owned());
            }
        }
        let request = Seen {
            method,
            target,
            authorization,
        };
        let answer = handler(&request);
        seen.lock().unwrap().push(request);
        conn.write_all(answer.as_bytes())?;
    }
}

fn answer(status: &str, headers: &[String], body: &str) -> String {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

const USER: &str = "puller";
const PASSWORD: &str = "pw-3e1f0d";
const TOKEN: &str = "tok-5a9c2e";

#[test]
fn the_tag_check_gets_a_token_from_the_registrys_realm_with_the_account() {
    // The realm: a token for the right account (Basic), refused otherwise.
    let realm = FakeServer::start(Arc::new(|r: &Seen| {
        let want = format!(
            "Basic {}",
            crate::git_hosts::base64(format!("{USER}:{PASSWORD}").as_bytes())
        );
        if r.target.starts_with("/token?") && r.authorization.as_deref() == Some(want.as_str()) {
            answer(
                "200 OK",
                &["Content-Type: application/json".to_owned()],
                &format!("{{\"access_token\":\"{TOKEN}\",\"expires_in\":60}}"),
            )
        } else {
            answer("401 Unauthorized", &[], "{}")
        }
    }));
    // The realm the registry names: on its own loopback host first, then on
    // `localhost` (another host name, plain http: the account must not go there).
    let realm_host = Arc::new(Mutex::new(format!("127.0.0.1:{}", realm.port)));
    let registry = {
        let realm_host = realm_host.clone();
        FakeServer::start(Arc::new(move |r: &Seen| {
            let is_manifest = r.method == "HEAD" && r.target.contains("/manifests/");
            if !is_manifest {
                return answer("404 Not Found", &[], "");
            }
            if r.authorization.as_deref() == Some(format!("Bearer {TOKEN}").as_str()) {
                return answer(
                    "200 OK",
                    &["Docker-Content-Digest: sha256:0000000000000000000000000000000000000000000000000000000000000000".to_owned()],
                    "",
                );
            }
            let repo = r
                .target
                .trim_start_matches("/v2/")
                .split("/manifests/")
                .next()
                .unwrap_or_default();
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{}/token\",service=\"fake-registry\",scope=\"repository:{repo}:pull\"",
                realm_host.lock().unwrap()
            );
            answer("401 Unauthorized", &[challenge], "")
        }))
    };
    let addr = format!("127.0.0.1:{}", registry.port);
    let fx = fixture(&addr);
    let name = format!("shop-{}-api", fx.env);
    let _images = ImageCleanup(vec![
        format!("{addr}/{name}:{}", fx.version),
        format!("{name}:{}", fx.version),
    ]);
    let server = start_with_account(&fx, &addr, USER, PASSWORD);

    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(
        logs.contains(&format!(
            "{addr}/{name}:{}: the registry has this tag, push skipped",
            fx.version
        )),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "{logs}");
    let asked = realm.seen();
    let token_request = asked
        .iter()
        .find(|r| r.target.starts_with("/token?"))
        .expect("the realm was asked");
    assert!(
        token_request.target.contains("service=fake-registry")
            && token_request
                .target
                .contains(&format!("scope=repository%3A{name}%3Apull")),
        "{token_request:?}"
    );
    let heads: Vec<_> = registry
        .seen()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .collect();
    assert_eq!(
        heads.len(),
        2,
        "one anonymous HEAD, one with the token: {heads:?}"
    );

    // A plain-http realm on another host name gets no account: the check says so,
    // the push is tried and fails against the fake registry.
    *realm_host.lock().unwrap() = format!("localhost:{}", realm.port);
    let before = realm.seen().len();
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["failed_stage"], "build", "{logs}");
    assert!(logs.contains("the account was not sent"), "{logs}");
    let later = &realm.seen()[before..];
    assert!(
        !later.is_empty() && later.iter().all(|r| r.authorization.is_none()),
        "{later:?}"
    );
}

#[test]
fn without_registry_username_the_account_docker_login_saved_is_used() {
    let registry = crate::registry::AuthRegistry::start("loggedin", "pw-8d2b4f");
    let fx = fixture(&registry.addr);
    let (pushed, _images) = pushed_image(&fx, &registry.addr);
    // What `docker login <addr>` writes, in a DOCKER_CONFIG of the test's own.
    let docker_config = fx.dir.path().join("docker-config");
    std::fs::create_dir(&docker_config).unwrap();
    let auth = crate::git_hosts::base64(b"loggedin:pw-8d2b4f");
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            "{{\"auths\": {{\"other.example.com\": {{\"auth\": \"eDp5\"}}, \"http://{}\": {{\"auth\": \"{auth}\"}}}}}}",
            registry.addr
        ),
    )
    .unwrap();
    let start_with_docker_config = || {
        crate::support::Server::start_with(
            &fx.dir.path().join("cutover.yml"),
            &fx.dir.path().join("data"),
            &[("DOCKER_CONFIG", docker_config.to_str().unwrap())],
        )
    };
    let server = start_with_docker_config();
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(logs.contains(&format!("pushed {pushed}")), "{logs}");
    assert!(!logs.contains("pw-8d2b4f"), "{logs}");
    // The tag check read it too: the same SHA again is not pushed again.
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(
        logs.contains(&format!("{pushed}: the registry has this tag, push skipped")),
        "{logs}"
    );
    server.terminate();

    // A credential store Cutover cannot run fails the stage and names it.
    std::fs::write(
        docker_config.join("config.json"),
        r#"{"credsStore": "cutover-test-absent"}"#,
    )
    .unwrap();
    let server = start_with_docker_config();
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["failed_stage"], "build", "{logs}");
    assert!(
        logs.contains("docker-credential-cutover-test-absent") && logs.contains("registry.username"),
        "{logs}"
    );
}

#[test]
fn swarm_services_are_created_with_the_registry_account_so_nodes_pull_with_it() {
    let registry = crate::registry::AuthRegistry::start("swarmer", "pw-1b7e9a");
    let fx = fixture(&registry.addr);
    let _services = crate::runtimes::SwarmCleanup(fx.env.clone());
    let v = &fx.version;
    let mut images = Vec::new();
    for service in ["api", "worker"] {
        let name = format!("shop-{}-{service}", fx.env);
        images.push(format!("{}/{name}:{v}", registry.addr));
        images.push(format!("{name}:{v}"));
    }
    let _images = ImageCleanup(images);
    // On swarm, with a non-public service too (converged by Swarm's own update), and
    // the account only in a docker config.json (what `docker login` writes).
    let config = fx.dir.path().join("cutover.yml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("runtime: docker", "runtime: swarm")
        .replace(
            "services:\n",
            "services:\n  worker:\n    run: \"exec sleep 3600\"\n",
        );
    std::fs::write(&config, text).unwrap();
    let docker_config = fx.dir.path().join("docker-config");
    std::fs::create_dir(&docker_config).unwrap();

    // Without an account the rollout stops at the push, with the registry's refusal,
    // before any Swarm service exists.
    let server = crate::support::Server::start_with(
        &config,
        &fx.dir.path().join("data"),
        &[("DOCKER_CONFIG", docker_config.to_str().unwrap())],
    );
    let (run, logs) = release_and_wait(&server, &fx.env, v);
    assert_eq!(run["failed_stage"], "build", "{logs}");
    assert!(
        logs.contains("refused an anonymous push")
            && (logs.contains("no basic auth credentials") || logs.contains("unauthorized")),
        "{logs}"
    );
    assert_eq!(crate::runtimes::swarm_services(&fx.env), Vec::<String>::new());
    server.terminate();

    std::fs::write(
        docker_config.join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"username\": \"swarmer\", \"password\": \"pw-1b7e9a\"}}}}}}",
            registry.addr
        ),
    )
    .unwrap();
    let server = crate::support::Server::start_with(
        &config,
        &fx.dir.path().join("data"),
        &[("DOCKER_CONFIG", docker_config.to_str().unwrap())],
    );
    let (run, logs) = release_and_wait(&server, &fx.env, v);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert_eq!(server.api_version(&fx.env).as_deref(), Some(v.as_str()));
    assert!(!logs.contains("pw-1b7e9a"), "{logs}");

    let services = crate::runtimes::swarm_services(&fx.env);
    assert_eq!(services.len(), 2, "{services:?}");
    // Each task's node pulled its image with the account: dockerd read each image's
    // manifest successfully, and this registry answers nothing without the account
    // (pushes PUT manifests; Cutover's tag check, before the push, found none).
    let log = std::fs::read_to_string(&registry.log).unwrap();
    for service in ["api", "worker"] {
        let uri = format!("/v2/shop-{}-{service}/manifests/", fx.env);
        let pulled = log.lines().any(|line| {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            matches!(entry["http.request.method"].as_str(), Some("GET" | "HEAD"))
                && entry["http.request.uri"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&uri))
                && entry["http.request.useragent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("docker/"))
                && entry["http.response.status"] == 200
        });
        assert!(pulled, "dockerd did not pull {uri} with the account:\n{log}");
    }
    for service in &services {
        let running = std::process::Command::new("docker")
            .args([
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
                service,
            ])
            .output()
            .unwrap();
        let running = String::from_utf8_lossy(&running.stdout);
        assert!(running.contains("Running"), "{service}: {running}");
    }
}

/// Debian's docker-registry with `auth: token` on a free loopback port, and the token
/// server beside it (a [`FakeServer`]) that signs ES256 JWTs with a key whose self-signed
/// certificate is the registry's `rootcertbundle` (sent in the token's `x5c` header).
/// It grants what a request's scopes ask for to `user` with `password`, nothing to anyone
/// else.
struct TokenRegistry {
    addr: String,
    child: std::process::Child,
    realm: FakeServer,
    _dir: tempfile::TempDir,
}

const TOKEN_SERVICE: &str = "cutover-test-registry";
const TOKEN_ISSUER: &str = "cutover-test-issuer";

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An ASN.1 ECDSA signature (SEQUENCE of two INTEGERs) as JWS wants it: r ‖ s, 32 bytes each.
fn jws_signature(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2; // SEQUENCE tag and (short) length
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "an INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.iter().take_while(|b| **b == 0).count()..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl TokenRegistry {
    fn start(user: &'static str, password: &'static str) -> TokenRegistry {
        use rcgen::SigningKey as _;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["cutover-test-issuer".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("bundle.pem"), cert.pem()).unwrap();
        let x5c = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(cert.der())
        };
        let key = Arc::new(key);
        let realm = FakeServer::start(Arc::new(move |r: &Seen| {
            let want = format!(
                "Basic {}",
                crate::git_hosts::base64(format!("{user}:{password}").as_bytes())
            );
            let Some(query) = r.target.strip_prefix("/token?") else {
                return answer("404 Not Found", &[], "");
            };
            let granted = r.authorization.as_deref() == Some(want.as_str());
            if r.authorization.is_some() && !granted {
                return answer("401 Unauthorized", &[], "{\"details\":\"bad account\"}");
            }
            let mut access = Vec::new();
            for pair in query.split('&') {
                let Some(("scope", value)) = pair.split_once('=') else {
                    continue;
                };
                let scope = percent_decode(value);
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                if granted {
                    access.push(serde_json::json!({
                        "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
                    }));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [x5c] });
            let claims = serde_json::json!({
                "iss": TOKEN_ISSUER, "sub": if granted { user } else { "" }, "aud": TOKEN_SERVICE,
                "exp": now.as_secs() + 300, "nbf": now.as_secs() - 10, "iat": now.as_secs(),
                "jti": format!("{}", now.as_nanos()), "access": access,
            });
            let signed = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let signature = jws_signature(&key.sign(signed.as_bytes()).unwrap());
            let token = format!("{signed}.{}", b64url(&signature));
            answer(
                "200 OK",
                &["Content-Type: application/json".to_owned()],
                &format!("{{\"token\":\"{token}\",\"expires_in\":300}}"),
            )
        }));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\nauth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    \
                 service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                dir.path().join("data").display(),
                realm.port,
                dir.path().join("bundle.pem").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry runs (scripts/registry-setup installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !matches!(
            crate::pipeline_support::http_get(port, &addr, "/v2/"),
            Some((401, _, _))
        ) {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry on {addr} did not answer: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        TokenRegistry {
            addr,
            child,
            realm,
            _dir: dir,
        }
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_registry_with_token_auth_takes_the_push_and_the_tag_check_reads_it_with_a_token() {
    let registry = TokenRegistry::start("tokenuser", "pw-6f4e2d");
    let fx = fixture(&registry.addr);
    let (pushed, _images) = pushed_image(&fx, &registry.addr);
    let name = format!("shop-{}-api", fx.env);
    let server = start_with_account(&fx, &registry.addr, "tokenuser", "pw-6f4e2d");

    // dockerd pushes through the token protocol with the account.
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(logs.contains(&format!("pushed {pushed}")), "{logs}");

    // The same SHA again: Cutover's own check gets a token and sees the tag.
    let asked = registry.realm.seen().len();
    let (run, logs) = release_and_wait(&server, &fx.env, &fx.version);
    assert_eq!(run["state"], "succeeded", "{logs}");
    assert!(
        logs.contains(&format!("{pushed}: the registry has this tag, push skipped")),
        "{logs}"
    );
    assert!(!logs.contains("pw-6f4e2d"), "{logs}");
    let ours = &registry.realm.seen()[asked..];
    assert!(
        ours.iter().any(
            |r| r.target.contains(&format!("scope=repository%3A{name}%3Apull"))
                && r.target.contains(&format!("service={TOKEN_SERVICE}"))
        ),
        "{ours:?}"
    );
}
