//! The registry's tag check: does the registry already hold `<name>:<sha>`?
//!
//! Asked with the Distribution API's manifest `HEAD /v2/<repo>/manifests/<tag>` (200: it
//! has the tag, 404: it does not), over plain http as the push's `registry.url` has no
//! scheme. A registry that answers 401 is authenticated to the way Docker does:
//!
//! - `WWW-Authenticate: Basic …`: the request again with the account, but only to a
//!   registry on this machine (a password never crosses the network in clear text);
//! - `WWW-Authenticate: Bearer realm=…,service=…,scope=…` (the token protocol of Docker
//!   Hub, GitLab, Harbor and distribution's `auth: token`): a token from the realm
//!   (`GET <realm>?service=…&scope=…`, the account as basic auth, the answer's `token` or
//!   `access_token`), then the HEAD again with `Authorization: Bearer <token>`.
//!
//! The realm is the registry's word, so it is checked like any remote input: only
//! `http://` and `https://` realms are followed, and the account is sent to a realm only
//! over https, or over plain http to the registry's own loopback host; any other realm is
//! asked for an anonymous token (enough for a public repository). The token answer is read
//! up to 64 KiB. Rejected: sending the password to whichever realm the registry names
//! (a registry on another host could collect it), and a tags-list GET (its answer grows
//! with the repository; the manifest HEAD is constant).

use std::time::Duration;

use crate::releases::error_chain;

/// The manifest media types the check accepts (Docker's and OCI's, single and lists).
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The most of a token answer that is read.
const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;

/// Whether the registry at `registry` (`host[:port][/prefix]`) holds the image `tag`
/// (`<name>:<version>`). `Err` says why the registry could not be asked.
pub(crate) async fn registry_has(
    registry: &str,
    tag: &str,
    credentials: Option<&(String, String)>,
) -> Result<bool, String> {
    let (name, version) = tag
        .rsplit_once(':')
        .ok_or_else(|| format!("{tag:?} has no version"))?;
    let (host, prefix) = registry.split_once('/').unwrap_or((registry, ""));
    let repo = if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", prefix.trim_matches('/'))
    };
    let url = format!("http://{host}/v2/{repo}/manifests/{version}");
    let client = client(&url)?;
    let head = |auth: Option<String>| {
        let mut request = client.head(&url).header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        request.send()
    };
    let sent = |e: reqwest::Error| format!("HEAD {url}: {}", error_chain(&e.without_url()));
    let resp = head(None).await.map_err(sent)?;
    let resp = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse)
            .ok_or_else(|| format!("HEAD {url} answered 401 without a WWW-Authenticate challenge"))?;
        let auth = match challenge.scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let (user, password) = credentials.ok_or_else(|| {
                    format!(
                        "HEAD {url} asks for an account; set registry.username and \
                         registry.password_secret (or log in with `docker login {host}`)"
                    )
                })?;
                if !is_loopback(hostname(host)) {
                    return Err(format!(
                        "the registry {host} asks for a password over plain http; the tag check \
                         sends one only to a registry on this machine"
                    ));
                }
                basic(user, password)
            }
            "bearer" => {
                let scope = format!("repository:{repo}:pull");
                let token = token(&challenge, &scope, host, credentials).await?;
                format!("Bearer {token}")
            }
            other => {
                return Err(format!(
                    "HEAD {url} asks for {other:?} authentication, which the tag check does not speak"
                ));
            }
        };
        head(Some(auth)).await.map_err(sent)?
    } else {
        resp
    };
    match resp.status() {
        s if s.is_success() => Ok(true),
        reqwest::StatusCode::NOT_FOUND => Ok(false),
        s => Err(format!("HEAD {url} answered {s}")),
    }
}

/// A bearer token for `scope` from the challenge's realm.
async fn token(
    challenge: &Challenge,
    scope: &str,
    registry_host: &str,
    credentials: Option<&(String, String)>,
) -> Result<String, String> {
    let realm = challenge
        .param("realm")
        .ok_or("the registry asks for a bearer token but names no realm")?;
    let realm_url =
        reqwest::Url::parse(realm).map_err(|e| format!("the token realm {realm:?} is not a URL: {e}"))?;
    let secure = match realm_url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(format!(
                "the token realm {realm:?} is {other}://; only http(s) realms are followed"
            ));
        }
    };
    let realm_host = realm_url.host_str().unwrap_or_default();
    let same_loopback_host = is_loopback(realm_host)
        && realm_host.trim_matches(['[', ']']) == hostname(registry_host).trim_matches(['[', ']']);
    let mut token_url = realm_url.clone();
    {
        let mut query = token_url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", challenge.param("scope").unwrap_or(scope));
    }
    let mut request = client(realm)?.get(token_url);
    let sends_account = credentials.is_some() && (secure || same_loopback_host);
    if let Some((user, password)) = credentials.filter(|_| sends_account) {
        request = request.header(reqwest::header::AUTHORIZATION, basic(user, password));
    }
    let shown = format!(
        "{}://{}{}",
        realm_url.scheme(),
        realm_url.host_str().unwrap_or_default(),
        realm_url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let mut resp = request
        .send()
        .await
        .map_err(|e| format!("token request to {shown}: {}", error_chain(&e.without_url())))?;
    if !resp.status().is_success() {
        let why = if credentials.is_some() && !sends_account {
            " (the account was not sent: the realm is plain http on another host; serve it over https)"
        } else if credentials.is_none() {
            " (no account: set registry.username and registry.password_secret, or `docker login`)"
        } else {
            " (check registry.username and the password registry.password_secret names)"
        };
        return Err(format!("the token realm {shown} answered {}{why}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("token answer of {shown}: {}", error_chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > TOKEN_ANSWER_LIMIT {
            return Err(format!("the token answer of {shown} is larger than 64 KiB"));
        }
        body.extend_from_slice(&chunk);
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("the token answer of {shown} is not JSON: {e}"))?;
    ["token", "access_token"]
        .iter()
        .find_map(|k| answer[k].as_str().filter(|t| !t.is_empty()))
        .map(str::to_owned)
        .ok_or_else(|| format!("the token answer of {shown} has no `token` or `access_token`"))
}

fn client(url: &str) -> Result<reqwest::Client, String> {
    crate::http::client_builder(url)
        .no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `host[:port]` without the port (`[::1]:5000` keeps its brackets).
fn hostname(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback(hostname: &str) -> bool {
    let h = hostname.trim_matches(['[', ']']);
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One `WWW-Authenticate` challenge: its scheme and `key=value` parameters (values
/// quoted or bare; a quoted value may hold commas and `\"`).
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            let Some(eq) = rest.find('=') else { break };
            let key = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let mut value = String::new();
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                rest = &quoted[end.min(quoted.len())..];
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                value = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            params.push((key, value));
        }
        Challenge {
            scheme: scheme.to_owned(),
            params,
        }
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_is_read_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c.param("service"), Some("registry.example.com"));
        assert_eq!(c.param("scope"), Some("repository:team/app:pull,push"));
        let c = Challenge::parse(r#"Basic realm="a \"quoted\" realm", charset=UTF-8"#);
        assert_eq!(c.scheme, "Basic");
        assert_eq!(c.param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c.param("charset"), Some("UTF-8"));
        assert_eq!(Challenge::parse("Bearer").params, vec![]);
        // An unterminated quote ends the value at the end of the header.
        assert_eq!(Challenge::parse(r#"Bearer realm="x"#).param("realm"), Some("x"));
    }

    #[test]
    fn hosts_are_split_from_their_ports() {
        assert_eq!(hostname("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(hostname("reg.example.com"), "reg.example.com");
        assert_eq!(hostname("[::1]:5000"), "[::1]");
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("127.example.com"));
    }

    #[tokio::test]
    async fn a_realm_that_is_not_http_is_refused_before_any_request() {
        let c = Challenge::parse(r#"Bearer realm="file:///etc/passwd",service="x""#);
        let account = ("u".to_owned(), "p".to_owned());
        let err = token(&c, "repository:a:pull", "127.0.0.1:5000", Some(&account))
            .await
            .unwrap_err();
        assert!(err.contains("only http(s) realms"), "{err}");
        let c = Challenge::parse(r#"Bearer service="x""#);
        let err = token(&c, "repository:a:pull", "127.0.0.1:5000", None)
            .await
            .unwrap_err();
        assert!(err.contains("no realm"), "{err}");
    }
}
