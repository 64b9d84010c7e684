//! URLs shown by `GET /api/v1/config` without the credentials they often carry: the
//! userinfo (`user:password@`), every query value (`?token=…`), the fragment, and path
//! segments that look like secrets (the long random segments of Slack-style hook URLs).
//! Each becomes `****`; scheme, host, port and the readable path stay, so an operator
//! can still tell which receiver is meant.
//!
//! Rejected: showing URLs to admins only (every viewer needs to see where events go) and
//! dropping them entirely (the same reason).

use serde_json::Value;

const HIDDEN: &str = "****";

/// Redacts the URLs of a serialized `Config`: `webhooks[].url`, `rabbitmq.url`,
/// `registry.url`.
pub(crate) fn config_urls(config: &mut Value) {
    if let Some(hooks) = config.get_mut("webhooks").and_then(Value::as_array_mut) {
        for h in hooks {
            redact_field(h, "url");
        }
    }
    for section in ["rabbitmq", "registry"] {
        if let Some(s) = config.get_mut(section) {
            redact_field(s, "url");
        }
    }
}

fn redact_field(v: &mut Value, field: &str) {
    if let Some(Value::String(url)) = v.get_mut(field) {
        *url = url_without_credentials(url);
    }
}

/// `https://user:pw@host/services/T0/B0/XXXXXXXXXXXXXXXXXXXX?token=abc#f` →
/// `https://****@host/services/T0/B0/****?token=****#****`.
pub(crate) fn url_without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, Some(HIDDEN)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{HIDDEN}@{host}"),
        None => authority.to_owned(),
    };
    let path: Vec<&str> = path
        .split('/')
        .map(|seg| if looks_secret(seg) { HIDDEN } else { seg })
        .collect();
    let mut out = format!("{scheme}{authority}{}", path.join("/"));
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}={HIDDEN}"),
                None if pair.is_empty() => String::new(),
                None => HIDDEN.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// A path segment of 16 or more characters mixing letters and digits, or of 32 or more
/// of anything: a token rather than a word.
fn looks_secret(seg: &str) -> bool {
    let n = seg.chars().count();
    let letters = seg.chars().any(|c| c.is_ascii_alphabetic());
    let digits = seg.chars().any(|c| c.is_ascii_digit());
    n >= 32 || (n >= 16 && letters && digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_and_the_receiver_stays_recognisable() {
        let cases = [
            ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
            (
                "https://bot:s3cret@ci.example/hook?token=abc&x=1#frag",
                "https://****@ci.example/hook?token=****&x=****#****",
            ),
            (
                "https://hooks.slack.com/services/T0000/B0000/XXXXabcd1234XXXXabcd1234",
                "https://hooks.slack.com/services/T0000/B0000/****",
            ),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("u:p@registry.example/team", "****@registry.example/team"),
            ("http://h/p?flag", "http://h/p?****"),
        ];
        for (url, want) in cases {
            assert_eq!(url_without_credentials(url), want, "{url}");
        }
    }
}
