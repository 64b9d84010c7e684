//! The control channel over TCP, for mirror routers on other machines
//! (`cutover data-plane --control-tcp ADDR --control-secret-file FILE`).
//!
//! The unix socket is checked by file permissions, peer uid and the secret; a TCP port has none
//! of that, so every request is authenticated with a secret both sides read from a file of their
//! own (at least 32 bytes, readable by its owner only), and the channel is never open: a data
//! plane refuses to listen for control on TCP without one.
//!
//! A request is one JSON line `{"ts": <unix ms>, "nonce": "<hex>", "mac": "<hex>", "request":
//! "<the request JSON, as a string>"}` where `mac` is HMAC-SHA256 over
//! `cutover-dataplane-tcp-v1 request\n<ts>\n<nonce>\n<request>`. The data plane refuses a
//! request whose time is more than a minute away from its clock or before it started listening,
//! whose nonce it saw within that window (a captured request cannot be replayed, also not to a
//! restarted data plane), or whose MAC does not match (compared in
//! constant time). The answer is `{"mac": "<hex>", "answer": "<the answer JSON>"}`, MAC over
//! `cutover-dataplane-tcp-v1 answer\n<nonce>\n<answer>`, so the control plane knows the answer
//! came from the holder of the secret and belongs to its request; only a refusal (which changes
//! nothing) is sent unsigned. Hand-over and shutdown are not served over TCP.
//!
//! The channel is authenticated, not encrypted: the routing table (upstream addresses, versions)
//! crosses the network in clear. Run it on the nodes' private network (or a VPN). Rejected:
//! TLS with client certificates (a CA to run for the routers; a shared secret file is what the
//! operator already handles for the nodes) and a bearer token per request (anyone on the path
//! could replay or reuse it).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::Error;

const REQUEST_DOMAIN: &str = "cutover-dataplane-tcp-v1 request";
const ANSWER_DOMAIN: &str = "cutover-dataplane-tcp-v1 answer";
/// Largest difference between a request's time and the data plane's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(60);
/// Shortest secret accepted.
pub(crate) const MIN_SECRET: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secret of a TCP control channel, read from a file on each side.
#[derive(Clone)]
pub struct SharedSecret(Arc<[u8]>);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl SharedSecret {
    /// Reads the secret (surrounding whitespace trimmed) from `path`, which must be readable by
    /// its owner only and hold at least 32 bytes.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bad = |message: String| Error::Secret {
            path: path.to_owned(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
        if meta.mode() & 0o077 != 0 {
            return Err(bad(format!(
                "is readable or writable by others (mode {:o}): chmod 600 it",
                meta.mode() & 0o777
            )));
        }
        let raw = std::fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
        let secret = raw.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(bad(format!(
                "holds {} bytes, fewer than {MIN_SECRET}: write e.g. `openssl rand -hex 32` into it",
                secret.len()
            )));
        }
        Ok(Self(secret.into()))
    }

    /// A secret given as bytes (at least 32).
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_SECRET).then(|| Self(bytes.into()))
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(part.as_bytes());
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        hex(&self.mac(parts).finalize().into_bytes())
    }

    fn verify(&self, parts: &[&str], given: &str) -> bool {
        unhex(given).is_some_and(|tag| self.mac(parts).verify_slice(&tag).is_ok())
    }
}

/// A signed request line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) ts: u64,
    pub(crate) nonce: String,
    pub(crate) mac: String,
    pub(crate) request: String,
}

/// A signed answer line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SignedAnswer {
    pub(crate) mac: String,
    pub(crate) answer: String,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// 16 random bytes in hex.
fn nonce() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Signs `request` (a request's JSON) into an envelope line; returns it with its nonce.
pub(crate) fn seal(secret: &SharedSecret, request: String) -> std::io::Result<(Vec<u8>, String)> {
    let ts = now_ms();
    let nonce = nonce()?;
    let mac = secret.sign(&[REQUEST_DOMAIN, &ts.to_string(), &nonce, &request]);
    let mut line = serde_json::to_vec(&Envelope {
        ts,
        nonce: nonce.clone(),
        mac,
        request,
    })
    .map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok((line, nonce))
}

/// Signs an answer line to the request of `nonce`.
pub(crate) fn seal_answer(secret: &SharedSecret, nonce: &str, answer: &crate::proto::Answer) -> Vec<u8> {
    let mut text = answer.line();
    text.pop(); // its newline
    let answer = String::from_utf8_lossy(&text).into_owned();
    let mac = secret.sign(&[ANSWER_DOMAIN, nonce, &answer]);
    let mut line = serde_json::to_vec(&SignedAnswer { mac, answer }).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The answer inside a signed answer line, if its MAC is right for the request of `nonce`.
pub(crate) fn open_answer(secret: &SharedSecret, nonce: &str, line: &[u8]) -> Option<String> {
    let signed: SignedAnswer = serde_json::from_slice(line).ok()?;
    secret
        .verify(&[ANSWER_DOMAIN, nonce, &signed.answer], &signed.mac)
        .then_some(signed.answer)
}

/// Nonces of requests seen within [`MAX_SKEW`] of their time (a replay is refused), and the
/// time before which requests are refused: when this data plane started listening, so a request
/// captured before a restart (whose nonces are forgotten) cannot be replayed to it after.
#[derive(Default)]
pub(crate) struct Seen {
    nonces: std::sync::Mutex<HashMap<String, u64>>,
    not_before: u64,
}

/// Why a request line was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    Stale,
    BeforeStart,
    Replayed,
    BadMac,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "not a signed request line",
            Refusal::Stale => "the request's time is more than a minute away from the data plane's clock: sync the clocks (NTP)",
            Refusal::BeforeStart => "the request was signed before this data plane started (a replay, or clocks apart: sync them)",
            Refusal::Replayed => "the request's nonce was already used (a replay)",
            Refusal::BadMac => "wrong signature: both sides must read the same --control-secret-file",
        })
    }
}

impl Seen {
    /// Refuses requests signed before `not_before` (unix ms).
    pub(crate) fn since(not_before: u64) -> Self {
        Self {
            nonces: std::sync::Mutex::default(),
            not_before,
        }
    }

    /// Checks a request line; returns the nonce and the request's JSON.
    pub(crate) fn open(
        &self,
        secret: &SharedSecret,
        line: &[u8],
        now: u64,
    ) -> Result<(String, String), Refusal> {
        let env: Envelope = serde_json::from_slice(line).map_err(|_| Refusal::Malformed)?;
        let nonce_ok =
            (16..=128).contains(&env.nonce.len()) && env.nonce.bytes().all(|b| b.is_ascii_hexdigit());
        if !nonce_ok {
            return Err(Refusal::Malformed);
        }
        let window = u64::try_from(MAX_SKEW.as_millis()).unwrap_or(u64::MAX);
        if env.ts.abs_diff(now) > window {
            return Err(Refusal::Stale);
        }
        if env.ts < self.not_before {
            return Err(Refusal::BeforeStart);
        }
        if !secret.verify(
            &[REQUEST_DOMAIN, &env.ts.to_string(), &env.nonce, &env.request],
            &env.mac,
        ) {
            return Err(Refusal::BadMac);
        }
        let mut seen = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Requests older than the window are refused as stale anyway: forget their nonces.
        seen.retain(|_, ts| ts.abs_diff(now) <= window);
        if seen.insert(env.nonce.clone(), env.ts).is_some() {
            return Err(Refusal::Replayed);
        }
        Ok((env.nonce, env.request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(c: u8) -> SharedSecret {
        SharedSecret::new(&[c; 32]).unwrap()
    }

    #[test]
    fn a_sealed_request_opens_once_with_the_same_secret_only() {
        let (line, nonce) = seal(&secret(1), "{\"op\":\"hello\"}".into()).unwrap();
        let line = &line[..line.len() - 1];
        let now = now_ms();
        assert_eq!(Seen::default().open(&secret(2), line, now), Err(Refusal::BadMac));
        let seen = Seen::default();
        assert_eq!(
            seen.open(&secret(1), line, now),
            Ok((nonce, "{\"op\":\"hello\"}".to_owned()))
        );
        assert_eq!(seen.open(&secret(1), line, now), Err(Refusal::Replayed));
        assert_eq!(
            Seen::default().open(&secret(1), line, now + 61_000),
            Err(Refusal::Stale)
        );
        assert_eq!(
            Seen::since(now + 1000).open(&secret(1), line, now + 1000),
            Err(Refusal::BeforeStart),
            "captured before a restart, replayed after it"
        );
    }

    #[test]
    fn a_changed_request_or_answer_does_not_verify() {
        let (line, _) = seal(&secret(1), "{\"op\":\"hello\"}".into()).unwrap();
        let mut env: Envelope = serde_json::from_slice(&line).unwrap();
        env.request = "{\"op\":\"shutdown\"}".into();
        let forged = serde_json::to_vec(&env).unwrap();
        assert_eq!(
            Seen::default().open(&secret(1), &forged, now_ms()),
            Err(Refusal::BadMac)
        );
        let answer = crate::proto::Answer::ok(7);
        let signed = seal_answer(&secret(1), "aa", &answer);
        let signed = &signed[..signed.len() - 1];
        assert!(open_answer(&secret(1), "aa", signed).is_some());
        assert!(
            open_answer(&secret(1), "bb", signed).is_none(),
            "another request's answer"
        );
        assert!(open_answer(&secret(2), "aa", signed).is_none());
    }

    #[test]
    fn secret_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SharedSecret::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("fewer than 32"), "{e}");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(SharedSecret::from_file(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SharedSecret::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert_eq!(format!("{:?}", secret(1)), "SharedSecret(<redacted>)");
    }
}
