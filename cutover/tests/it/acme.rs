//! Automatic certificates end to end: `router.tls.acme` against a real private ACME server
//! (Debian's `pebble`, its test CA; names resolved to 127.0.0.1 by `pebble-challtestsrv`'s
//! DNS), which validates HTTP-01 against the router's own plain port (no
//! `PEBBLE_VA_ALWAYS_VALID`). curl then verifies the served certificate against pebble's
//! issuing root (from its management port); the key is stored 0600; a restarted server and
//! data plane serve the same certificate with pebble gone.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::pipeline_support::http_get;
use crate::support::Fixture;

const HOST: &str = "shop.acme.localhost";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble's own HTTPS (directory, management): a private CA and a leaf for 127.0.0.1.
fn pebble_tls(dir: &Path) -> PathBuf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Cutover ACME test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "pebble");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("pebble-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    dir.join("pebble-ca.pem")
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// pebble on `dir_port` validating HTTP-01 on `http_port`, its DNS answering 127.0.0.1 for
/// every name; returns both processes and pebble's management port.
fn start_pebble(dir: &Path, dir_port: u16, http_port: u16) -> (Killed, Killed, u16) {
    let (dns, mgmt, chall_mgmt) = (free_port(), free_port(), free_port());
    let challtest = Command::new("pebble-challtestsrv")
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{chall_mgmt}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv runs (apt-get install pebble)");
    let challtest = Killed(challtest);
    wait_port(dns, "pebble-challtestsrv's DNS (TCP)");
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{dir_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let pebble = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble runs (apt-get install pebble)");
    let pebble = Killed(pebble);
    wait_port(dir_port, "pebble");
    wait_port(mgmt, "pebble's management");
    (pebble, challtest, mgmt)
}

/// curl over HTTPS to `HOST` on `port` (resolved to 127.0.0.1), trusting only `ca`.
fn curl(ca: &Path, port: u16) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{HOST}:{port}/"))
        .output()
        .expect("curl runs")
}

/// The leaf certificate the TLS port serves for `HOST` (DER, through curl's certinfo).
fn served_cert(ca: &Path, port: u16) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "%{certs}",
            "-o",
            "/dev/null",
            "--cacert",
        ])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .arg(format!("https://{HOST}:{port}/"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("curl shows the chain");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].to_owned()
}

#[test]
fn acme_gets_a_certificate_from_pebble_by_http_01_and_reuses_it_after_a_restart() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path();
    let pebble_ca = pebble_tls(dir);
    let tls_port = free_port();
    let text = std::fs::read_to_string(fixture.config()).unwrap();
    // The directory's URL is only known once pebble runs, and pebble needs the router's port:
    // the server starts first, and its ACME task retries until pebble answers.
    let dir_port = free_port();
    std::fs::write(
        fixture.config(),
        format!(
            "{text}router:\n  tls:\n    port: {tls_port}\n    acme:\n      directory: https://127.0.0.1:{dir_port}/dir\n      contact: [mailto:ops@example.com]\n      ca_file: {}\n      hosts: [{HOST}]\n      redirect: true\n",
            pebble_ca.display()
        ),
    )
    .unwrap();
    let server = fixture.start();

    // A challenge path never reaches an application: unknown tokens are the router's 404.
    let (status, _, body) = http_get(
        server.router_port,
        HOST,
        "/.well-known/acme-challenge/nonexistent",
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("no such ACME challenge"), "{body}");
    // Plain HTTP to the host: a redirect (challenges excepted, above).
    let (status, _, _) = http_get(server.router_port, HOST, "/cart").unwrap();
    assert_eq!(status, 308);

    let (pebble, challtest, mgmt) = start_pebble(dir, dir_port, server.router_port);

    // pebble's issuing root, from its management port (its own TLS: our test CA).
    let root = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&pebble_ca)
        .arg(format!("https://127.0.0.1:{mgmt}/roots/0"))
        .output()
        .unwrap();
    assert!(root.status.success(), "{}", String::from_utf8_lossy(&root.stderr));
    let root_file = dir.join("pebble-root.pem");
    std::fs::write(&root_file, &root.stdout).unwrap();

    // The first order failed (pebble was not up); the retry (5 s later) gets the certificate.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = curl(&root_file, tls_port);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "nothing deployed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate verified by pebble's root: {}\ndata plane log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(fixture.data_dir().join("dataplane/dataplane.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let first = served_cert(&root_file, tls_port);
    let stored = fixture.data_dir().join("acme/certs").join(HOST);
    let mode = std::fs::metadata(stored.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    assert!(stored.join("cert.pem").exists());

    // pebble gone, server and data plane restarted: the stored certificate is served.
    drop((pebble, challtest));
    server.terminate();
    let _server = fixture.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&root_file, tls_port).status.success() {
        assert!(Instant::now() < deadline, "the stored certificate is not served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_cert(&root_file, tls_port), first, "the same certificate");
}
