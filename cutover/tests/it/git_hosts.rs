//! Real git hosts on loopback for the remote-repository tests: `git http-backend` (the
//! smart-HTTP server of Debian's `git`) behind a tiny CGI shim with HTTP basic
//! authentication, which can also turn into a black hole (accepts, never answers); and
//! OpenSSH's `sshd` on its own port with its own host key and one authorized deploy key
//! forced into `git-shell`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::git;

/// A bare copy of `work` at `dest` (the "hosted" repository).
pub fn host_repo(work: &Path, dest: &Path) {
    git(
        work,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
    );
}

/// A smart-HTTP git server on 127.0.0.1 serving every repository under `root`.
pub struct GitHttp {
    pub port: u16,
    black_hole: Arc<AtomicBool>,
}

impl GitHttp {
    /// `auth`: `(user, password)` every request must carry.
    pub fn start(root: &Path, auth: Option<(&str, &str)>) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let black_hole = Arc::new(AtomicBool::new(false));
        let hole = black_hole.clone();
        let root = root.to_owned();
        let expected = auth.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (root, expected, hole) = (root.clone(), expected.clone(), hole.clone());
                std::thread::spawn(move || {
                    if hole.load(Ordering::SeqCst) {
                        // Accept, read nothing, answer nothing, for longer than any test waits.
                        std::thread::sleep(Duration::from_secs(120));
                        drop(stream);
                        return;
                    }
                    let _ = serve_cgi(stream, &root, expected.as_deref());
                });
            }
        });
        GitHttp { port, black_hole }
    }

    /// From now on every new connection is accepted and never answered.
    pub fn go_silent(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
    }
}

fn serve_cgi(stream: TcpStream, root: &Path, expected_auth: Option<&str>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Some(expected) = expected_auth
        && header("authorization").as_deref() != Some(expected)
    {
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 22\r\n\
              Connection: close\r\n\r\nauthentication needed\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = header(h) {
            cgi.env(var, v);
        }
    }
    if expected_auth.is_some() {
        cgi.env("REMOTE_USER", "deploy");
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut output)?;
    let _ = writer.join();
    let _ = child.wait();
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
        .unwrap_or((output.len(), output.len()));
    let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for h in head.lines().map(str::trim).filter(|h| !h.is_empty()) {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            _ => {
                response.push_str(h);
                response.push_str("\r\n");
            }
        }
    }
    let body = &output[split.1..];
    out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    out.write_all(body)
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// OpenSSH's sshd on 127.0.0.1, accepting one deploy key (for root), every session forced
/// into `git-shell`.
pub struct GitSsh {
    pub port: u16,
    /// The deploy key's private half (OpenSSH format).
    pub private_key: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl GitSsh {
    pub fn start() -> GitSsh {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |name: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "cutover-test", "-f"])
                .arg(d.join(name))
                .output()
                .expect("ssh-keygen runs (Debian: openssh-client)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        keygen("host_key");
        keygen("deploy_key");
        let public = std::fs::read_to_string(d.join("deploy_key.pub")).unwrap();
        let git_shell = which("git-shell");
        std::fs::write(
            d.join("authorized_keys"),
            format!("restrict,command=\"{git_shell} -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" {public}"),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all("/run/sshd").unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nAcceptEnv GIT_PROTOCOL\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd runs (Debian: openssh-server; scripts/test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitSsh {
            port,
            private_key: std::fs::read_to_string(d.join("deploy_key")).unwrap(),
            child,
            _dir: dir,
        }
    }
}

impl Drop for GitSsh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> String {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join(program);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("{program} is not on PATH");
}
