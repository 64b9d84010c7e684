//! What the API accepts from a client: the validated newtypes every JSON body, path segment and
//! query value is parsed into (`cutover_core::names`, the store's `ParamKey`, roles, stages, run
//! kinds and states, setting names, durations, cron expressions), and serde_json into the public
//! body types (`Grants`, the `grants` of `POST /api/v1/tokens`).
//!
//! The request body structs of `cutover-server` are private and hold plain strings, numbers and
//! booleans that serde_json fills; what they carry is handed to the parsers fuzzed here.
//!
//! The first input byte picks the parser, the rest is its input. Besides "never panics", each
//! accepted value must keep its documented shape and survive a round trip through its text and
//! JSON forms.
#![no_main]

use cutover_core::config::{CronSchedule, format_duration, parse_duration};
use cutover_core::run::{RunKind, RunState, Stage};
use cutover_core::settings::refused_setting_name;
use cutover_core::{Actor, AppName, EnvName, Grants, JobName, Role, ServiceName, Version, VersionRef};
use libfuzzer_sys::fuzz_target;

/// The store's `ParamKey` is compiled from its source file: depending on `cutover-store` would
/// build sqlx (SQLite and PostgreSQL drivers) into every fuzz target for one 150-line parser.
#[allow(dead_code)]
#[path = "../../cutover-store/src/key.rs"]
mod key;
use key::{PARAM_KEY_MAX_LEN, ParamKey};

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

macro_rules! check_name_type {
    ($ty:ty, $s:expr) => {{
        let s: &str = $s;
        match <$ty>::parse(s) {
            Ok(n) => {
                assert!(is_name(n.as_str()), "{} accepted {s:?}", stringify!($ty));
                assert_eq!(n.as_str(), s);
                assert_eq!(<$ty>::parse(&n.to_string()).unwrap(), n);
                let json = serde_json::to_string(&n).unwrap();
                assert_eq!(serde_json::from_str::<$ty>(&json).unwrap(), n);
            }
            Err(e) => {
                assert!(!is_name(s), "{} refused {s:?}: {e}", stringify!($ty));
                let _ = e.to_string();
            }
        }
        // JSON string input (as in a body): same verdict as the parser.
        let json = serde_json::to_string(s).unwrap();
        assert_eq!(
            serde_json::from_str::<$ty>(&json).is_ok(),
            <$ty>::parse(s).is_ok()
        );
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 16 == 15 {
        // Raw JSON bytes into a public body type.
        if let Ok(grants) = serde_json::from_slice::<Grants>(rest) {
            let _ = grants.describe();
            let _ = grants.highest();
            for env in grants.envs.keys() {
                assert!(grants.role_on(env.as_str()).is_some());
            }
            let json = serde_json::to_vec(&grants).unwrap();
            assert_eq!(serde_json::from_slice::<Grants>(&json).unwrap(), grants);
        }
        return;
    }
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 16 {
        0 => check_name_type!(EnvName, s),
        1 => check_name_type!(AppName, s),
        2 => check_name_type!(ServiceName, s),
        3 => check_name_type!(JobName, s),
        4 => match Actor::parse(s) {
            Ok(a) => {
                assert!((1..=64).contains(&a.as_str().len()));
                assert!(
                    a.as_str()
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"._@-".contains(&c))
                );
                let json = serde_json::to_string(&a).unwrap();
                assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), a);
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(serde_json::from_str::<Actor>(&serde_json::to_string(s).unwrap()).is_err());
            }
        },
        5 => {
            if let Ok(v) = Version::parse(s) {
                assert_eq!(v.as_str().len(), 40);
                assert!(
                    v.as_str()
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                );
                assert_eq!(v.short().len(), 12);
                assert_eq!(Version::parse(&v.to_string()).unwrap(), v);
                let json = serde_json::to_string(&v).unwrap();
                assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), v);
            }
        }
        6 => match VersionRef::parse(s) {
            Ok(r) => {
                assert_eq!(VersionRef::parse(&r.to_string()).unwrap(), r);
                if let VersionRef::Git(g) = &r {
                    assert!(!g.is_empty() && g.len() <= cutover_core::names::MAX_VERSION_REF_LEN);
                    assert!(!g.starts_with('-') && !g.contains(".."));
                    assert!(!g.chars().any(|c| c.is_whitespace() || c.is_control()));
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        },
        7 => match ParamKey::parse(s) {
            Ok(k) => {
                assert!(k.as_str().starts_with('/'));
                assert!(k.as_str().chars().count() <= PARAM_KEY_MAX_LEN);
                assert!(
                    k.segments()
                        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                );
                assert!(k.is_under(&k));
                assert_eq!(ParamKey::parse(&k.to_string()).unwrap(), k);
                let json = serde_json::to_string(&k).unwrap();
                assert_eq!(serde_json::from_str::<ParamKey>(&json).unwrap(), k);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        },
        8 => {
            // `a|b`: prefix semantics of `is_under` on two keys.
            if let Some((a, b)) = s.split_once('|')
                && let (Ok(a), Ok(b)) = (ParamKey::parse(a), ParamKey::parse(b))
                && a.is_under(&b)
            {
                assert!(a.as_str().starts_with(b.as_str()));
                let mut segs = a.segments();
                assert!(b.segments().all(|seg| segs.next() == Some(seg)), "{a} under {b}");
            }
        }
        9 => {
            if let Ok(r) = Role::parse(s) {
                assert_eq!(r.as_str(), s);
            }
            if let Ok(st) = Stage::parse(s) {
                assert_eq!(Stage::parse(st.slug()).unwrap(), st);
                assert_eq!(Stage::parse(st.title()).unwrap(), st);
            }
            if let Some(k) = RunKind::parse(s) {
                assert_eq!(RunKind::parse(k.as_str()), Some(k));
            }
            if let Some(st) = RunState::parse(s) {
                assert_eq!(RunState::parse(st.as_str()), Some(st));
            }
        }
        10 => {
            if refused_setting_name(s).is_none() {
                assert!(!s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
                let upper = s.to_ascii_uppercase();
                for exact in [
                    "BASH_ENV",
                    "ENV",
                    "PATH",
                    "IFS",
                    "NODE_OPTIONS",
                    "JAVA_TOOL_OPTIONS",
                ] {
                    assert_ne!(upper, exact, "{s} allowed");
                }
                for prefix in ["LD_", "DYLD_", "GIT_", "CUTOVER_", "PYTHON", "PERL5", "RUBY"] {
                    assert!(!upper.starts_with(prefix), "{s} allowed");
                }
            }
        }
        11 => {
            if let Ok(d) = parse_duration(s) {
                assert!(d.as_secs() > 0);
                let text = format_duration(d);
                assert_eq!(parse_duration(&text), Ok(d), "{s:?} -> {text:?}");
            }
        }
        12 => {
            if let Ok(cron) = CronSchedule::parse(s) {
                // A few minutes around 2026 and the ends of the supported range.
                for t in [0i64, 1_780_000_000, 4_102_444_800, 253_402_300_740] {
                    let _ = cron.is_due(t);
                    let _ = cron.next_after(t);
                }
            }
        }
        _ => {}
    }
});
