//! The data plane's files in `<data_dir>/dataplane/`: paths, the 0700 directory, the secret,
//! the pid file and the persisted table (`routes.json`).
//!
//! `routes.json` is written to a temporary file and renamed over the old one, so a crash never
//! leaves half a table; an unreadable table is renamed aside (`routes.json.bad`) and the data
//! plane starts empty, since the control plane pushes its routes again anyway. Rejected: an
//! append-only journal (replaying it buys nothing over a table of a few hundred routes).

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, ListenerKind};

/// Paths of one data directory's data-plane files.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
}

impl Paths {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("dataplane"),
        }
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub(crate) fn secret(&self) -> PathBuf {
        self.dir.join("secret")
    }
    pub(crate) fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub(crate) fn routes(&self) -> PathBuf {
        self.dir.join("routes.json")
    }
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("dataplane.log")
    }
    pub(crate) fn start_lock(&self) -> PathBuf {
        self.dir.join("start.lock")
    }
}

/// How long a starting data plane waits for another one that is starting.
const START_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Serialises data-plane starts (from "is one running?" to "control.sock is mine"), so two
/// control planes starting one at the same moment never get two data planes fighting over the
/// ports and the socket: the second waits, then finds the first running. Released on drop; a
/// serving data plane does not hold it (its successor must be able to start).
pub(crate) async fn start_lock(paths: &Paths) -> Result<fs::File, Error> {
    let path = paths.start_lock();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("opening the data-plane start lock", &path))?;
    let deadline = std::time::Instant::now() + START_LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Starting { lock: path });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err("locking the data-plane start lock", &path)(e));
            }
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// Creates the directory (and parents) and makes it 0700, also when it already existed.
pub(crate) fn ensure_dir(paths: &Paths) -> Result<(), Error> {
    fs::create_dir_all(&paths.dir).map_err(io_err("creating the data-plane directory", &paths.dir))?;
    fs::set_permissions(&paths.dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err("making the data-plane directory 0700", &paths.dir))
}

/// Reads the secret (trimmed hex).
pub(crate) fn read_secret(paths: &Paths) -> std::io::Result<String> {
    Ok(fs::read_to_string(paths.secret())?.trim().to_owned())
}

/// Reads the secret, creating it (0600, 32 random bytes in hex) if it does not exist.
pub(crate) fn secret_or_create(paths: &Paths) -> Result<String, Error> {
    let path = paths.secret();
    match read_secret(paths) {
        Ok(s) if s.len() == 64 => return Ok(s),
        Ok(_) => {
            return Err(Error::Protocol {
                message: format!(
                    "{} is not 64 hex characters: delete it and restart the data plane (a new one is created)",
                    path.display()
                ),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading the data-plane secret", &path)(e)),
    }
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading random bytes", Path::new("/dev/urandom")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(hex.as_bytes()));
    match created {
        Ok(()) => Ok(hex),
        // Another data plane created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(paths).map_err(io_err("reading the data-plane secret", &path))
        }
        Err(e) => Err(io_err("creating the data-plane secret", &path)(e)),
    }
}

/// Writes `contents` to `path` through a temporary file renamed over it (mode 0600).
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn write_pid(paths: &Paths) -> Result<(), Error> {
    let path = paths.pid();
    write_atomic(&path, format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err("writing the data-plane pid file", &path))
}

/// The pid in the pid file, if readable.
pub(crate) fn read_pid(paths: &Paths) -> Option<u32> {
    fs::read_to_string(paths.pid()).ok()?.trim().parse().ok()
}

/// A route as persisted and handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteRecord {
    pub(crate) app: String,
    pub(crate) env: String,
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) upstreams: Vec<SocketAddr>,
}

/// A listener as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenerRecord {
    pub(crate) kind: ListenerKind,
    pub(crate) addr: SocketAddr,
}

/// The content of `routes.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Table {
    /// The epoch of the data plane that wrote it (the next one uses `epoch + 1`).
    pub(crate) epoch: u32,
    pub(crate) listeners: Vec<ListenerRecord>,
    pub(crate) routes: Vec<RouteRecord>,
    /// Holds and maintenance per environment (absent in tables of older data planes).
    #[serde(default)]
    pub(crate) gates: Vec<crate::GateRecord>,
    /// Feature flags per environment (absent in tables of older data planes).
    #[serde(default)]
    pub(crate) flags: Vec<crate::FlagsRecord>,
    /// The router's forwarding and access-log settings (absent in older files).
    #[serde(default)]
    pub(crate) edge: crate::EdgeConfig,
}

/// Reads `routes.json`; a missing file is an empty table, an unreadable one is renamed aside
/// (with a warning) and read as empty.
pub(crate) fn load_table(paths: &Paths) -> Table {
    let path = paths.routes();
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Table::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the routing table; starting empty");
            return Table::default();
        }
    };
    match serde_json::from_slice(&text) {
        Ok(t) => t,
        Err(e) => {
            let bad = path.with_extension("json.bad");
            tracing::warn!(path = %path.display(), moved_to = %bad.display(), error = %e,
                "the routing table is not valid; starting empty (the control plane pushes its routes again)");
            let _ = fs::rename(&path, &bad);
            Table::default()
        }
    }
}

pub(crate) fn save_table(paths: &Paths, table: &Table) -> Result<(), Error> {
    let path = paths.routes();
    let json = serde_json::to_vec_pretty(table).map_err(|e| Error::Protocol {
        message: format!("cannot serialise the routing table: {e}"),
    })?;
    write_atomic(&path, &json).map_err(io_err("writing the routing table", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path());
        ensure_dir(&paths).unwrap();
        let a = secret_or_create(&paths).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(secret_or_create(&paths).unwrap(), a);
        let mode = fs::metadata(paths.secret()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn bad_table_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path());
        ensure_dir(&paths).unwrap();
        fs::write(paths.routes(), b"{not json").unwrap();
        let t = load_table(&paths);
        assert!(t.routes.is_empty());
        assert!(paths.dir.join("routes.json.bad").exists());
        let table = Table {
            edge: crate::EdgeConfig::default(),
            epoch: 3,
            listeners: vec![ListenerRecord {
                kind: ListenerKind::Main,
                addr: "127.0.0.1:8080".parse().unwrap(),
            }],
            routes: vec![RouteRecord {
                app: "shop".into(),
                env: "prod".into(),
                service: "web".into(),
                version: "abc".into(),
                upstreams: vec!["127.0.0.1:9000".parse().unwrap()],
            }],
            gates: Vec::new(),
            flags: Vec::new(),
        };
        save_table(&paths, &table).unwrap();
        let back = load_table(&paths);
        assert_eq!(back.epoch, 3);
        assert_eq!(back.routes, table.routes);
        assert_eq!(back.listeners, table.listeners);
    }
}
