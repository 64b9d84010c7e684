//! The schema of the `router:` section's TLS and access-log parts.

use serde_json::{Value, json};

use super::*;

pub(super) fn tls() -> Value {
    object(
        &["port"],
        "HTTPS (HTTP/2 and HTTP/1.1) on its own port, with certificates picked by host name (SNI) and reloaded when their files change, or got from an ACME server (give certificates, acme or both).",
        props(vec![
            (
                "port",
                integer(0, Some(65_535), "The HTTPS port on 127.0.0.1 (0: any free one)."),
            ),
            (
                "certificates",
                json!({
                    "type": "array",
                    "description": "One entry per certificate (at least one).",
                    "items": object(
                        &["hosts", "cert", "key"],
                        "A certificate and the host names it is for.",
                        props(vec![
                            ("hosts", json!({ "type": "array", "items": { "type": "string" }, "description": "Host names (*.example.com for one label)." })),
                            ("cert", string("Absolute path of the PEM certificate chain (leaf first).")),
                            ("key", string("Absolute path of the PEM private key.")),
                            ("redirect", boolean("Answer plain-HTTP requests for these hosts with a 308 to HTTPS.", Some(false))),
                        ]),
                    ),
                }),
            ),
            (
                "hsts",
                boolean(
                    "Send Strict-Transport-Security: max-age=31536000 on HTTPS answers.",
                    Some(false),
                ),
            ),
            (
                "acme",
                object(
                    &["directory", "hosts"],
                    "Certificates got automatically from an ACME server (HTTP-01 on the router's plain port), kept in the data directory and renewed before they expire.",
                    props(vec![
                        (
                            "directory",
                            described(
                                json!({ "type": "string", "pattern": "^https://\\S+$" }),
                                "The ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory.",
                            ),
                        ),
                        (
                            "contact",
                            json!({ "type": "array", "items": { "type": "string", "pattern": "^mailto:\\S+@\\S+$" }, "description": "Account contact URIs, e.g. mailto:ops@example.com." }),
                        ),
                        (
                            "ca_file",
                            string(
                                "Absolute path of a PEM CA certificate trusted for the directory's TLS (a private ACME server).",
                            ),
                        ),
                        (
                            "hosts",
                            json!({ "type": "array", "items": { "type": "string" }, "description": "Host names to get a certificate for (no wildcards)." }),
                        ),
                        (
                            "redirect",
                            boolean(
                                "Answer plain-HTTP requests for these hosts with a 308 to HTTPS (ACME challenges excepted).",
                                Some(false),
                            ),
                        ),
                    ]),
                ),
            ),
        ]),
    )
}

pub(super) fn access_log() -> Value {
    object(
        &[],
        "One JSON line per request, to a file (rotated by size) or stdout; off when absent.",
        props(vec![
            (
                "path",
                string("An absolute file path, written by the data plane."),
            ),
            (
                "stdout",
                boolean(
                    "Write to the data plane's standard output instead of a file.",
                    Some(false),
                ),
            ),
            ("max_size", {
                let mut s = json!({
                    "type": ["integer", "string"],
                    "description": "Rotate the file before it passes this size: bytes, or a number with B, KB, MB, GB, KiB, MiB or GiB.",
                });
                s["default"] = json!("100MiB");
                s
            }),
            ("keep", {
                let mut s = integer(0, None, "Rotated files kept (access.log.1 the newest).");
                s["default"] = json!(crate::config::DEFAULT_ACCESS_LOG_KEEP);
                s
            }),
        ]),
    )
}
