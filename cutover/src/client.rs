//! The HTTP client every subcommand but `serve` and `config check` uses.
//!
//! Every request carries the API token (`Authorization: Bearer`), taken from
//! `--token`, `CUTOVER_TOKEN` or the credentials file (see `credentials`).
//! Errors are turned into sentences a person can act on: no server answering
//! says how to start one, no token says how to get one; an API error prints
//! the server's message.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Client {
    base: String,
    /// None: no token was found; requests go out without one and a 401 says
    /// how to log in.
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `server` with `token`, else the one in the credentials file; over https
    /// it also trusts the PEM CA certificates in `ca_file` (`--ca-file`, `CUTOVER_CA_FILE`).
    pub fn new(server: &str, token: Option<&str>, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--server / CUTOVER_URL must start with http:// or https:// (got {server:?}), e.g. http://127.0.0.1:7070"
            );
        }
        let token = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Some(t.to_owned()),
            None => crate::credentials::load(&base)?,
        };
        let mut builder =
            cutover_engine::http::client_builder(&base).connect_timeout(std::time::Duration::from_secs(5));
        if let Some(file) = ca_file {
            if !base.starts_with("https://") {
                bail!(
                    "--ca-file / CUTOVER_CA_FILE is for an https:// server, and {base} is plain http; \
                     use https:// or leave the CA file out"
                );
            }
            let pem = std::fs::read(file).with_context(|| {
                format!(
                    "cannot read the CA file {} (--ca-file / CUTOVER_CA_FILE)",
                    file.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA that signed the server's certificate",
                        file.display()
                    )
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Self { base, token, http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send::<(), T>(Method::GET, path, None).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send::<(), T>(Method::DELETE, path, None).await
    }

    /// GETs a newline-delimited JSON stream and hands each object to `each`
    /// as it arrives, until the server closes the stream.
    pub async fn stream_lines(&self, path: &str, mut each: impl FnMut(Value)) -> anyhow::Result<()> {
        use futures::StreamExt;
        let url = format!("{}{}", self.base, path);
        let resp = self
            .authorized(self.http.get(&url))
            .send()
            .await
            .map_err(|e| self.connect_error(&url, e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(self.api_error(status, &text));
        }
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading the stream from {url}"))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    each(v);
                }
            }
        }
        Ok(())
    }

    fn connect_error(&self, url: &str, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow!(
                "no Cutover server answers at {}; start one with `cutover serve --config cutover.yml` \
                 (or point --server / CUTOVER_URL at a running one)",
                self.base
            )
        } else {
            anyhow!("request to {url} failed: {e}")
        }
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.authorized(self.http.request(method, &url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let limit = request_timeout();
        let resp = req.timeout(limit).send().await.map_err(|e| {
            if e.is_timeout() && !e.is_connect() {
                anyhow!(
                    "the server at {} did not answer {path} within {} s; it may be overloaded or \
                     stuck (see its log)",
                    self.base,
                    limit.as_secs()
                )
            } else {
                self.connect_error(&url, e)
            }
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            return Err(self.api_error(status, &text));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("the server's answer to {path} is not what this CLI expects"))
    }
}

/// How long one API call (not a stream) may take before the CLI gives up with an error:
/// `CUTOVER_REQUEST_TIMEOUT` seconds, 300 by default (a `scale` on a dev tier waits for the new
/// instances' health checks).
fn request_timeout() -> std::time::Duration {
    let secs = std::env::var("CUTOVER_REQUEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(300);
    std::time::Duration::from_secs(secs)
}

impl Client {
    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A 401 becomes what to do about it; anything else the server's message.
    fn api_error(&self, status: StatusCode, body: &str) -> anyhow::Error {
        if status == StatusCode::UNAUTHORIZED {
            let server = server_message(body).unwrap_or_default();
            let login = format!(
                "run `cutover login --server {}` with a token from an admin (`cutover token create NAME --role ROLE`), \
                 or pass --token / set CUTOVER_TOKEN",
                self.base
            );
            return match &self.token {
                None => anyhow!(
                    "no API token for {}: {login}. (On the server's host, the admin token is in <data-dir>/admin.token.)",
                    self.base
                ),
                Some(_) => anyhow!(
                    "{} refused the token: {server}\nTo use another token, {login}",
                    self.base
                ),
            };
        }
        api_error(status, body)
    }
}

fn server_message(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
}

fn api_error(status: StatusCode, body: &str) -> anyhow::Error {
    match server_message(body) {
        Some(m) => anyhow!("{m}"),
        None if status == StatusCode::NOT_FOUND => {
            anyhow!("the server does not know this request (404); is it an older Cutover than this CLI?")
        }
        None => anyhow!("the server answered {status}: {}", body.trim()),
    }
}

/// Encodes a parameter key for the URL: `/shop-prod/x` → `/api/v1/params/shop-prod/x`.
pub fn param_path(route: &str, key: &str) -> anyhow::Result<String> {
    if !key.starts_with('/') {
        bail!("parameter keys start with '/', e.g. /shop-prod/desired_version (got {key:?})");
    }
    let mut out = format!("/api/v1/{route}");
    for seg in key.split('/').skip(1) {
        out.push('/');
        out.push_str(&urlencode(seg));
    }
    Ok(out)
}

/// One URL path segment or query value, percent-encoded (see `cutover_engine::http`).
pub fn urlencode(s: &str) -> String {
    cutover_engine::http::encode_segment(s)
}
