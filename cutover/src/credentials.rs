//! The per-user credentials file: a JSON map from server URL to API token,
//! at `$XDG_CONFIG_HOME/cutover/credentials.json` (else
//! `~/.config/cutover/credentials.json`), mode 0600 in a 0700 directory.
//! `cutover login` writes it; `cutover serve` and `cutover demo` add the admin
//! token they mint on first start for their own URL.
//!
//! The CLI picks a token in this order: `--token`, `CUTOVER_TOKEN`, this file.
//!
//! Rejected: the OS keyring (not available on a headless server, where the
//! CLI runs most) and one token for every server (a token is per server).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, bail};

/// The file's path, from `XDG_CONFIG_HOME` or `HOME`.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!(
                "neither XDG_CONFIG_HOME nor HOME is set, so there is no credentials file; pass --token or set CUTOVER_TOKEN"
            ),
        },
    };
    Ok(base.join("cutover").join("credentials.json"))
}

/// How a server URL is written in the file: no trailing slash.
pub fn key(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

fn load_all() -> anyhow::Result<BTreeMap<String, String>> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a JSON object of server URL to token; fix it, or delete it and run `cutover login` again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The token saved for `server`, if any.
pub fn load(server: &str) -> anyhow::Result<Option<String>> {
    Ok(load_all()?.remove(&key(server)))
}

/// Saves `token` for `server` (0600), keeping the other servers' tokens.
/// Returns the file's path.
pub fn store(server: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let mut all = load_all()?;
    all.insert(key(server), token.to_owned());
    let dir = path.parent().unwrap_or(&path).to_owned();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
