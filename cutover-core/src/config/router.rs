//! The `router:` section: its port, the trusted proxies whose forwarding headers are believed,
//! and the access log.
//!
//! Address ranges are checked here (so `config check` reports them with their line and column)
//! and handed on as canonical text; the router parses them again, the crate staying ignorant of
//! `cutover-core`. The access log's file must be absolute: the data plane, which writes it, does
//! not run in the directory of `cutover.yml`. Rejected: a bare `access_log: stdout` string form
//! beside the mapping (two shapes for one key, and the schema gets an `anyOf`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde_saphyr::Location;

use super::build::opt;
use super::extract::{Ctx, Fields, SNode, boolean, count, list, parsed};
use super::keys;
use super::node::Node;
use super::types::{AccessLog, AccessLogTarget, Acme, Certificate, RouterConfig, RouterTls};

/// `router.access_log.max_size` when not given: 100 MiB.
pub const DEFAULT_ACCESS_LOG_MAX_SIZE: u64 = 100 * 1024 * 1024;
/// `router.access_log.keep` when not given.
pub const DEFAULT_ACCESS_LOG_KEEP: u32 = 5;

pub(crate) fn router(ctx: &mut Ctx<'_>, node: &SNode, at: Location) -> Option<RouterConfig> {
    let f = Fields::new(ctx, node, at, "router", keys::ROUTER)?;
    let mut ok = true;
    let port = opt(ctx, &f, "port", &mut ok, |ctx, n, p| {
        super::extract::integer(ctx, n, p, 0, 65_535).and_then(|v| u16::try_from(v).ok())
    });
    let trusted_proxies = opt(ctx, &f, "trusted_proxies", &mut ok, |ctx, n, p| {
        let items = list(ctx, n, p, "a list of address ranges, e.g. [10.0.0.0/8]")?;
        let mut out = Vec::with_capacity(items.len());
        let mut all = true;
        for (i, item) in items.iter().enumerate() {
            match parsed(ctx, item, &format!("{p}[{i}]"), check_cidr) {
                Some(c) => out.push(c),
                None => all = false,
            }
        }
        all.then_some(out)
    })
    .unwrap_or_default();
    let access_log = opt(ctx, &f, "access_log", &mut ok, |ctx, n, p| {
        access_log(ctx, n, f.key_location("access_log"), p)
    });
    let tls = opt(ctx, &f, "tls", &mut ok, |ctx, n, p| {
        tls(ctx, n, f.key_location("tls"), p)
    });
    ok.then_some(RouterConfig {
        port,
        trusted_proxies,
        access_log,
        tls,
    })
}

fn absolute_file(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<PathBuf> {
    parsed(ctx, node, path, |s| {
        let file = PathBuf::from(s);
        if file.is_absolute() && file.file_name().is_some() {
            Ok(file)
        } else {
            Err(format!(
                "{s:?} is not an absolute file path; the data plane reads it, so give it from /, e.g. /etc/cutover/tls/www.pem"
            ))
        }
    })
}

fn tls(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<RouterTls> {
    let f = Fields::new(ctx, node, at, path, keys::TLS)?;
    let mut ok = true;
    let port = f
        .required(ctx, "port", "the HTTPS port on 127.0.0.1, e.g. 7443")
        .and_then(|n| super::extract::integer(ctx, n, &f.path("port"), 0, 65_535))
        .and_then(|v| u16::try_from(v).ok());
    ok &= port.is_some();
    let hsts = opt(ctx, &f, "hsts", &mut ok, boolean).unwrap_or(false);
    let acme = opt(ctx, &f, "acme", &mut ok, |ctx, n, p| {
        acme(ctx, n, f.key_location("acme"), p)
    });
    let mut certificates = Vec::new();
    match f.get("certificates") {
        Some(n) => {
            let p = f.path("certificates");
            match list(ctx, n, &p, "a list of { hosts, cert, key }") {
                Some([]) if acme.is_none() => {
                    ctx.error(n.referenced, &p, "give at least one certificate (or `acme:`)");
                    ok = false;
                }
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match certificate(ctx, item, &format!("{p}[{i}]")) {
                            Some(c) => certificates.push(c),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        // Only ACME certificates: fine; neither: nothing to serve.
        None if acme.is_some() || f.get("acme").is_some() => {}
        None => {
            ctx.error(
                at,
                path,
                "give `certificates:` (a list of { hosts, cert, key }) or `acme:` (automatic certificates)",
            );
            ok = false;
        }
    }
    Some(RouterTls {
        port: port?,
        certificates,
        hsts,
        acme,
    })
    .filter(|_| ok)
}

/// `router.tls.acme`: certificates from an ACME server by HTTP-01 (see
/// `cutover_router::AcmeSettings`). The directory is `https://` (RFC 8555); the hosts are plain
/// names (HTTP-01 cannot prove a wildcard).
fn acme(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<Acme> {
    let f = Fields::new(ctx, node, at, path, keys::ACME)?;
    let mut ok = true;
    let directory = f
        .required(
            ctx,
            "directory",
            "the ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory",
        )
        .and_then(|n| {
            parsed(ctx, n, &f.path("directory"), |s| {
                let rest = s.strip_prefix("https://").ok_or_else(|| {
                    format!("{s:?} is not an https:// URL; ACME directories are served over HTTPS (RFC 8555)")
                })?;
                if rest.is_empty()
                    || rest.starts_with('/')
                    || s.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "{s:?} is not a URL: give e.g. https://acme-v02.api.letsencrypt.org/directory"
                    ));
                }
                Ok(s.to_owned())
            })
        });
    let contact = opt(ctx, &f, "contact", &mut ok, |ctx, n, p| {
        let items = list(ctx, n, p, "a list of contact URIs, e.g. [mailto:ops@example.com]")?;
        let mut out = Vec::new();
        let mut all = true;
        for (i, item) in items.iter().enumerate() {
            match parsed(ctx, item, &format!("{p}[{i}]"), |s| {
                let addr = s.strip_prefix("mailto:").unwrap_or("");
                if addr.contains('@')
                    && !addr.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control())
                {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "{s:?} is not a contact URI: give mailto:<address>, e.g. mailto:ops@example.com"
                    ))
                }
            }) {
                Some(c) => out.push(c),
                None => all = false,
            }
        }
        all.then_some(out)
    })
    .unwrap_or_default();
    let ca_file = opt(ctx, &f, "ca_file", &mut ok, absolute_file);
    let hosts = f
        .required(ctx, "hosts", "the host names to get certificates for")
        .and_then(|n| {
            let p = f.path("hosts");
            let items = list(ctx, n, &p, "a list of host names")?;
            if items.is_empty() {
                ctx.error(n.referenced, &p, "give at least one host name");
                return None;
            }
            let mut out = Vec::new();
            let mut all = true;
            for (i, item) in items.iter().enumerate() {
                match parsed(ctx, item, &format!("{p}[{i}]"), |s| {
                    let h = super::hosts::check_host(s)?;
                    if h.starts_with("*.") {
                        return Err(format!("{s:?}: ACME's HTTP-01 challenge cannot prove a wildcard; list the names, or give a wildcard certificate under `certificates:`"));
                    }
                    Ok(h)
                }) {
                    Some(h) => out.push(h),
                    None => all = false,
                }
            }
            all.then_some(out)
        });
    let redirect = opt(ctx, &f, "redirect", &mut ok, boolean).unwrap_or(false);
    Some(Acme {
        directory: directory?,
        contact,
        ca_file,
        hosts: hosts?,
        redirect,
    })
    .filter(|_| ok)
}

fn certificate(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<Certificate> {
    let f = Fields::new(ctx, node, node.referenced, path, keys::CERTIFICATE)?;
    let hosts = f
        .required(ctx, "hosts", "the host names this certificate is for")
        .and_then(|n| {
            let p = f.path("hosts");
            let items = list(ctx, n, &p, "a list of host names")?;
            let mut out = Vec::new();
            let mut all = !items.is_empty();
            for (i, item) in items.iter().enumerate() {
                match parsed(ctx, item, &format!("{p}[{i}]"), super::hosts::check_host) {
                    Some(h) => out.push(h),
                    None => all = false,
                }
            }
            all.then_some(out)
        });
    let cert = f
        .required(ctx, "cert", "the PEM certificate chain's absolute path")
        .and_then(|n| absolute_file(ctx, n, &f.path("cert")));
    let key = f
        .required(ctx, "key", "the PEM private key's absolute path")
        .and_then(|n| absolute_file(ctx, n, &f.path("key")));
    let mut ok = true;
    let redirect = opt(ctx, &f, "redirect", &mut ok, boolean).unwrap_or(false);
    Some(Certificate {
        hosts: hosts?,
        cert: cert?,
        key: key?,
        redirect,
    })
    .filter(|_| ok)
}

fn access_log(ctx: &mut Ctx<'_>, node: &SNode, at: Location, path: &str) -> Option<AccessLog> {
    let f = Fields::new(ctx, node, at, path, keys::ACCESS_LOG)?;
    let mut ok = true;
    let file = opt(ctx, &f, "path", &mut ok, |ctx, n, p| {
        parsed(ctx, n, p, |s| {
            let file = PathBuf::from(s);
            if file.is_absolute() && file.file_name().is_some() {
                Ok(file)
            } else {
                Err(format!(
                    "{s:?} is not an absolute file path; the data plane writes the access log, so give it as /var/log/cutover/access.log, or use `stdout: true`"
                ))
            }
        })
    });
    let stdout = opt(ctx, &f, "stdout", &mut ok, boolean).unwrap_or(false);
    let max_size = opt(ctx, &f, "max_size", &mut ok, size).unwrap_or(DEFAULT_ACCESS_LOG_MAX_SIZE);
    let keep =
        opt(ctx, &f, "keep", &mut ok, |ctx, n, p| count(ctx, n, p, 0)).unwrap_or(DEFAULT_ACCESS_LOG_KEEP);
    let target = match (file, stdout) {
        (Some(_), true) => {
            ctx.error(
                at,
                path,
                "give either `path` (a file) or `stdout: true`, not both",
            );
            return None;
        }
        (Some(file), false) => AccessLogTarget::File(file),
        (None, true) => AccessLogTarget::Stdout,
        (None, false) => {
            if ok {
                ctx.error(
                    at,
                    path,
                    "say where the access log goes: `path: /var/log/cutover/access.log` or `stdout: true` (remove the section to turn it off)",
                );
            }
            return None;
        }
    };
    ok.then_some(AccessLog {
        target,
        max_size,
        keep,
    })
}

/// A size: a whole number of bytes, or a string with a unit (`512KiB`, `100MB`, `1GiB`).
fn size(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<u64> {
    if let Node::Int(_) = node.value {
        return super::extract::integer(ctx, node, path, 1, u64::MAX.into())
            .and_then(|v| u64::try_from(v).ok());
    }
    parsed(ctx, node, path, parse_size)
}

pub(crate) fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let unit = unit.trim();
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{raw:?} is not a size: expected a number with one of the units B, KB, MB, GB, KiB, MiB, GiB, e.g. \"100MiB\""
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{raw:?} is not a size: expected a positive number, e.g. \"100MiB\""))
}

/// An IP address or `ADDRESS/PREFIX` with no bits set after the prefix; returned canonical.
pub(crate) fn check_cidr(raw: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "{raw:?} is not an address range ({why}); expected an IP address or ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32"
        )
    };
    let (addr, prefix) = match raw.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (raw.trim(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
    let (bits, max): (u128, u8) = match addr {
        IpAddr::V4(v4) => (u32::from(v4).into(), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad("bad prefix length"))?,
    };
    let host_bits = u32::from(max - prefix);
    let host_mask = if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    };
    if bits & host_mask != 0 {
        return Err(bad("bits set after the prefix; write the network address"));
    }
    Ok(format!("{addr}/{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "app: a\nservices: { web: { run: x, public: true } }\nenvironments: { dev: { tier: dev } }\n";

    fn parse(router: &str) -> Result<RouterConfig, String> {
        crate::config::parse(&format!("{BASE}{router}"), std::path::Path::new("cutover.yml"))
            .map(|c| c.router)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn router_section_reads_proxies_and_access_log() {
        let r = parse(
            "router:\n  trusted_proxies: [10.0.0.0/8, \"::1\"]\n  access_log: { path: /var/log/a.log, max_size: 1MiB, keep: 2 }\n",
        )
        .unwrap();
        assert_eq!(
            r.trusted_proxies,
            vec!["10.0.0.0/8".to_owned(), "::1/128".to_owned()]
        );
        let log = r.access_log.unwrap();
        assert_eq!(log.target, AccessLogTarget::File("/var/log/a.log".into()));
        assert_eq!((log.max_size, log.keep), (1 << 20, 2));
        let r = parse("router: { access_log: { stdout: true } }\n").unwrap();
        let log = r.access_log.unwrap();
        assert_eq!(log.target, AccessLogTarget::Stdout);
        assert_eq!(
            (log.max_size, log.keep),
            (DEFAULT_ACCESS_LOG_MAX_SIZE, DEFAULT_ACCESS_LOG_KEEP)
        );
        let r = parse("router: { port: 1 }\n").unwrap();
        assert!(r.trusted_proxies.is_empty() && r.access_log.is_none());
    }

    #[test]
    fn router_tls_section() {
        let r = parse(
            "router:\n  tls:\n    port: 7443\n    hsts: true\n    certificates:\n      - { hosts: [www.example.com, \"*.example.com\"], cert: /etc/c.pem, key: /etc/k.pem, redirect: true }\n",
        )
        .unwrap();
        let tls = r.tls.unwrap();
        assert_eq!(
            (tls.port, tls.hsts, tls.certificates[0].redirect),
            (7443, true, true)
        );
        assert_eq!(
            tls.certificates[0].hosts,
            vec!["www.example.com".to_owned(), "*.example.com".to_owned()]
        );
        let e = parse("router:\n  tls: { port: 7443, certificates: [] }\n").unwrap_err();
        assert!(e.contains("at least one certificate"), "{e}");
        let e = parse("router:\n  tls: { port: 7443 }\n").unwrap_err();
        assert!(e.contains("`acme:`"), "{e}");
        let e = parse("router:\n  tls: { port: 7443, certificates: [{ hosts: [a.example.com], cert: c.pem, key: /k }] }\n")
            .unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = parse("router:\n  tls: { certificates: [{ hosts: [a.example.com], cert: /c, key: /k }] }\n")
            .unwrap_err();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn router_tls_acme() {
        let r = parse(
            "router:\n  tls:\n    port: 7443\n    acme:\n      directory: https://127.0.0.1:14000/dir\n      contact: [mailto:ops@example.com]\n      ca_file: /etc/pebble/ca.pem\n      hosts: [Shop.example.com]\n      redirect: true\n",
        )
        .unwrap();
        let tls = r.tls.unwrap();
        assert!(tls.certificates.is_empty());
        let acme = tls.acme.unwrap();
        assert_eq!(acme.directory, "https://127.0.0.1:14000/dir");
        assert_eq!(acme.hosts, vec!["shop.example.com".to_owned()]);
        assert_eq!(acme.ca_file, Some("/etc/pebble/ca.pem".into()));
        assert!(acme.redirect);
        for (bad, says) in [
            (
                "{ directory: http://acme.example/dir, hosts: [a.example.com] }",
                "https://",
            ),
            (
                "{ directory: https://acme.example/dir, hosts: [\"*.example.com\"] }",
                "wildcard",
            ),
            (
                "{ directory: https://acme.example/dir, hosts: [] }",
                "at least one host",
            ),
            (
                "{ directory: https://acme.example/dir, hosts: [a.example.com], contact: [ops@example.com] }",
                "mailto:",
            ),
            (
                "{ directory: https://acme.example/dir, hosts: [a.example.com], ca_file: ca.pem }",
                "absolute",
            ),
            ("{ hosts: [a.example.com] }", "directory"),
        ] {
            let e = parse(&format!("router:\n  tls:\n    port: 7443\n    acme: {bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn router_section_errors_point_at_the_value() {
        let e = parse("router:\n  trusted_proxies: [10.0.0.0/8, 10.1.2.3/8]\n").unwrap_err();
        assert!(
            e.contains("cutover.yml:5:") && e.contains("router.trusted_proxies[1]"),
            "{e}"
        );
        assert!(e.contains("network address"), "{e}");
        let e = parse("router:\n  access_log: { path: logs/a.log }\n").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = parse("router:\n  access_log: { keep: 3 }\n").unwrap_err();
        assert!(e.contains("stdout: true"), "{e}");
        let e = parse("router:\n  access_log: { stdout: true, path: /a }\n").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("router:\n  access_log: { stdout: true, max_size: 10 parsecs }\n").unwrap_err();
        assert!(e.contains("not a size"), "{e}");
    }

    #[test]
    fn sizes_and_ranges() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("5 MB"), Ok(5_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("0").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(check_cidr("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
        assert_eq!(check_cidr("192.0.2.7"), Ok("192.0.2.7/32".into()));
        assert_eq!(check_cidr("2001:db8::/32"), Ok("2001:db8::/32".into()));
        assert_eq!(check_cidr("0.0.0.0/0"), Ok("0.0.0.0/0".into()));
        assert!(check_cidr("10.0.0.1/8").unwrap_err().contains("network address"));
        assert!(check_cidr("10.0.0.0/40").is_err());
        assert!(check_cidr("lb.example.com").is_err());
    }
}
