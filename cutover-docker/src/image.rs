//! Image builds: `<app>-<env>-<service>:<sha>` from the release directory.
//!
//! The build context is the release directory without what its
//! `.dockerignore` excludes, packed as a tar while it is streamed (see
//! `context.rs`: symlinks kept as symlinks, never followed out of the tree), sent to
//! the engine's classic builder (`POST /build`, the only one every Docker
//! version answers without a session), `pull` off: base images must exist
//! locally. Each line of build output goes to the caller as it arrives (the
//! Build stage log). A build is skipped when the tag already exists, as
//! the spec asks: one artifact per service and version.
//!
//! [`DockerRuntime::push_image`] copies a built image to a registry: it tags
//! `<tag>` as `<registry>/<tag>` and pushes that (`POST /images/…/push`)
//! with the account when one is given (else anonymously), streaming the engine's progress. Whether the
//! registry already has the tag is the caller's question (the engine asks
//! the registry's HTTP API), since dockerd has no cheap way to tell.
//!
//! Rejected: BuildKit, which
//! needs a gRPC session (bollard's `buildkit` feature, heavy to compile)
//! and buys nothing for local, pull-free builds.

use std::collections::HashMap;
use std::path::{Component, Path};

use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{DockerError, is_not_found};
use crate::{DockerRuntime, context, labels};

/// What [`DockerRuntime::build_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The tag existed already; nothing was built.
    pub skipped: bool,
}

impl DockerRuntime {
    /// Whether the engine has an image with this tag.
    pub async fn image_exists(&self, tag: &str) -> Result<bool, DockerError> {
        match self.inner.docker.inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(DockerError::api(format!("inspect image {tag}"))(err)),
        }
    }

    /// Builds `tag` from `release_dir` with the Dockerfile at `dockerfile`
    /// (relative to `release_dir`), unless `tag` exists. Every output line
    /// is sent to `lines` (a dropped receiver is not an error).
    pub async fn build_image(
        &self,
        release_dir: &Path,
        dockerfile: &str,
        tag: &str,
        lines: UnboundedSender<String>,
    ) -> Result<BuildOutcome, DockerError> {
        if self.image_exists(tag).await? {
            let _ = lines.send(format!("image {tag} exists; build skipped"));
            return Ok(BuildOutcome { skipped: true });
        }
        if !release_dir.is_dir() {
            return Err(DockerError::ReleaseDirMissing {
                path: release_dir.to_owned(),
            });
        }
        let relative = Path::new(dockerfile);
        let inside = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if dockerfile.is_empty() || !inside {
            return Err(DockerError::BadDockerfilePath {
                path: dockerfile.to_owned(),
            });
        }
        if !release_dir.join(relative).is_file() {
            return Err(DockerError::DockerfileMissing {
                path: release_dir.join(relative),
            });
        }
        let ignore = context::read_ignore(release_dir).map_err(|source| DockerError::Context {
            path: release_dir.join(".dockerignore"),
            source,
        })?;
        let applied = if ignore.len() > 0 {
            format!(", .dockerignore: {} patterns", ignore.len())
        } else {
            String::new()
        };
        let _ = lines.send(format!(
            "building {tag} from {} (Dockerfile {dockerfile}{applied})",
            release_dir.display(),
        ));
        let (body, sent) = context::stream(release_dir.to_owned(), dockerfile.to_owned(), ignore);
        let mut image_labels = HashMap::new();
        if let Some((_, sha)) = tag.rsplit_once(':') {
            image_labels.insert(labels::VERSION.to_owned(), sha.to_owned());
        }
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&image_labels)
            .build();
        let mut stream = self
            .inner
            .docker
            .build_image(options, None, Some(bollard::body_try_stream(body)));
        let mut partial = String::new();
        let mut failed = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    failed = Some(error);
                    break;
                }
                Err(err) => return Err(DockerError::api(format!("build {tag}"))(err)),
            };
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                partial.push_str(text);
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    let line = line.trim_end();
                    if !line.is_empty() {
                        let _ = lines.send(line.to_owned());
                    }
                }
            }
            let error = info.error_detail.and_then(|d| d.message);
            if let Some(message) = error {
                failed = Some(message);
                break;
            }
        }
        if !partial.trim().is_empty() {
            let _ = lines.send(partial.trim_end().to_owned());
        }
        if let Some(message) = failed {
            let _ = lines.send(format!("build of {tag} failed: {message}"));
            return Err(DockerError::Build {
                tag: tag.to_owned(),
                message: message.trim().to_owned(),
            });
        }
        let _ = lines.send(format!("build context: {} KiB sent", sent.bytes() / 1024));
        if !self.image_exists(tag).await? {
            return Err(DockerError::Build {
                tag: tag.to_owned(),
                message: "the engine reported no error but the tag does not exist".to_owned(),
            });
        }
        let _ = lines.send(format!("built {tag}"));
        Ok(BuildOutcome { skipped: false })
    }

    /// Pushes the local image `tag` (`<app>-<env>-<service>:<sha>`) to
    /// `registry` (`host[:port][/prefix]`, no scheme): tags it
    /// `<registry>/<tag>`, then pushes that (with `credentials` when given: user and
    /// password, sent to dockerd in the `X-Registry-Auth` header, never logged). Progress
    /// lines go to `lines` (consecutive repeats folded). Returns the pushed
    /// reference.
    pub async fn push_image(
        &self,
        tag: &str,
        registry: &str,
        credentials: Option<(String, String)>,
        lines: UnboundedSender<String>,
    ) -> Result<String, DockerError> {
        let authenticated = credentials.is_some();
        let registry = registry.trim_end_matches('/');
        let (name, version) = tag
            .rsplit_once(':')
            .ok_or_else(|| DockerError::ImageMissing { tag: tag.to_owned() })?;
        if !self.image_exists(tag).await? {
            return Err(DockerError::ImageMissing { tag: tag.to_owned() });
        }
        let repo = format!("{registry}/{name}");
        let reference = format!("{repo}:{version}");
        let options = TagImageOptionsBuilder::new().repo(&repo).tag(version).build();
        self.inner
            .docker
            .tag_image(tag, Some(options))
            .await
            .map_err(DockerError::api(format!("tag {tag} as {reference}")))?;
        let _ = lines.send(format!("pushing {reference}"));
        let options = PushImageOptionsBuilder::new().tag(version).build();
        let host = registry.split('/').next().unwrap_or(registry).to_owned();
        let auth = credentials.map(|(username, password)| bollard::auth::DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(host),
            ..Default::default()
        });
        let mut stream = self.inner.docker.push_image(&repo, Some(options), auth);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(err) => {
                    let message = match &err {
                        bollard::errors::Error::DockerStreamError { error } => error.clone(),
                        other => other.to_string(),
                    };
                    let _ = lines.send(format!("push of {reference} failed: {message}"));
                    let action = format!(
                        "push {reference}: {}",
                        push_hint(registry, &message, authenticated)
                    );
                    return Err(DockerError::api(action)(err));
                }
            };
            if let Some(status) = info.status.as_deref().map(str::trim)
                && !status.is_empty()
                && status != last
            {
                let _ = lines.send(status.to_owned());
                status.clone_into(&mut last);
            }
        }
        Ok(reference)
    }
}

/// What to do about a failed push, from the engine's message.
/// Whether dockerd's message says the registry wants (other) credentials.
fn auth_refused(m: &str) -> bool {
    [
        "unauthorized",
        "authentication required",
        "denied",
        "no basic auth credentials",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

fn push_hint(registry: &str, message: &str, authenticated: bool) -> String {
    let host = registry.split('/').next().unwrap_or(registry);
    let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = hostname == "localhost" || hostname.starts_with("127.");
    let m = message.to_ascii_lowercase();
    if m.contains("http response to https client") || (!loopback && m.contains("https://")) {
        format!(
            "the registry {host} speaks plain http, which dockerd allows only for 127.0.0.0/8: add \
             {{\"insecure-registries\": [\"{host}\"]}} to /etc/docker/daemon.json and restart dockerd, \
             or serve the registry over https"
        )
    } else if m.contains("connection refused")
        || m.contains("no such host")
        || m.contains("i/o timeout")
        || m.contains("dial tcp")
        || m.contains("no route to host")
    {
        let insecure = if loopback {
            String::new()
        } else {
            format!(
                " (a plain-http registry other than loopback also needs \
                 \"insecure-registries\": [\"{host}\"] in /etc/docker/daemon.json)"
            )
        };
        format!(
            "the registry at {host} (registry.url) is not reachable from dockerd: start it (locally, \
             as root: scripts/registry-setup) or fix registry.url{insecure}"
        )
    } else if auth_refused(&m) && !authenticated {
        format!(
            "the registry at {host} refused an anonymous push; give Cutover an account: \
             `registry: {{ url, username, password_secret }}` in cutover.yml with the password in \
             the parameter store (`cutover param put /<app>/secrets/<name> -`)"
        )
    } else if auth_refused(&m) {
        format!(
            "the registry at {host} refused the push with the account in registry.username; check \
             the user name, the password in registry.password_secret, and that the account may push"
        )
    } else {
        format!("the registry at {host} (registry.url) refused it; see the Build stage log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_failures_say_what_to_do() {
        let refused =
            "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused";
        let hint = push_hint("127.0.0.1:5999", refused, false);
        assert!(
            hint.contains("127.0.0.1:5999") && hint.contains("scripts/registry-setup"),
            "{hint}"
        );
        assert!(!hint.contains("insecure-registries"), "{hint}");
        let hint = push_hint("10.1.2.3:5000/team", refused, false);
        assert!(
            hint.contains("insecure-registries") && hint.contains("10.1.2.3:5000"),
            "{hint}"
        );
        let https = "Get \"https://reg.lan:5000/v2/\": http: server gave HTTP response to HTTPS client";
        let hint = push_hint("reg.lan:5000", https, false);
        assert!(
            hint.contains("insecure-registries") && hint.contains("daemon.json"),
            "{hint}"
        );
        let hint = push_hint("reg.example.com", "unauthorized: authentication required", false);
        assert!(hint.contains("password_secret"), "{hint}");
        let hint = push_hint("reg.example.com", "unauthorized: authentication required", true);
        assert!(hint.contains("registry.username"), "{hint}");
    }
}
