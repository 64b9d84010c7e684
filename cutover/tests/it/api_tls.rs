//! The API over TLS: `cutover serve --tls-cert/--tls-key` with a certificate of a private CA
//! (rcgen); the CLI verifies it (refused without `--ca-file`, accepted with it or with
//! `CUTOVER_CA_FILE`), plain HTTP on that port gets no answer, and a certificate replaced on
//! disk (signed by another CA) is what new connections get, without a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::{Fixture, Server, stderr, stdout};

/// A CA written to `<dir>/<name>-ca.pem`, and a leaf for 127.0.0.1 it signed, written by rename
/// (key first) to `<dir>/api.crt` and `<dir>/api.key`.
fn ca_and_leaf(dir: &Path, name: &str) -> PathBuf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Cutover API test CA {name}"));
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "cutover api");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let ca_file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    for (file, text) in [("api.key", key.serialize_pem()), ("api.crt", cert.pem())] {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
    ca_file
}

fn env_list(server: &Server, ca: Option<&Path>, by_env: bool) -> std::process::Output {
    let mut cmd = server.command("admin");
    cmd.args(["env", "list", "-o", "json"]);
    match (ca, by_env) {
        (Some(ca), true) => {
            cmd.env("CUTOVER_CA_FILE", ca);
        }
        (Some(ca), false) => {
            cmd.arg("--ca-file").arg(ca);
        }
        (None, _) => {}
    }
    cmd.output().expect("cutover runs")
}

#[test]
fn the_api_serves_https_with_a_private_ca_the_cli_verifies_and_a_renewed_certificate() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path();
    let first_ca = ca_and_leaf(dir, "first");
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    let server = Server::start_with_args(
        &fixture.config(),
        &fixture.data_dir(),
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // Never silently unverified: without the CA the CLI refuses the certificate.
    let out = env_list(&server, None, false);
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = stderr(&out).to_lowercase();
    assert!(text.contains("certificate") || text.contains("tls"), "{text}");

    for by_env in [false, true] {
        let out = env_list(&server, Some(&first_ca), by_env);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("\"prod\""), "{}", stdout(&out));
    }

    // Plain HTTP to the TLS port is not served.
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        crate::pipeline_support::http_get(port, "127.0.0.1", "/api/v1/health")
            .is_none_or(|(status, _, _)| status != 200)
    );

    // A CA file for a plain-http server is a mistake said so.
    let out = server
        .command("admin")
        .env("CUTOVER_URL", format!("http://127.0.0.1:{port}"))
        .args(["env", "list", "--ca-file"])
        .arg(&first_ca)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("is for an https:// server"),
        "{}",
        stderr(&out)
    );

    // Renewed on disk (by another CA): new connections get it, no restart.
    let second_ca = ca_and_leaf(dir, "second");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env_list(&server, Some(&second_ca), false);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!env_list(&server, Some(&first_ca), false).status.success());
}
