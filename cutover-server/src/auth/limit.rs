//! A per-source limit on failed authentications, kept across restarts.
//!
//! Each client address (the TCP peer; behind a reverse proxy, the proxy's) may send at most
//! [`FailureLimits::max_failures`] unknown or malformed tokens within
//! [`FailureLimits::window`]; the next one locks the address out for
//! [`FailureLimits::lockout`]: every request of it that needs a token is answered 429 with
//! `Retry-After`, without looking at its token. A missing token is not counted (it guesses
//! nothing), nor are expired or revoked ones (their owner is not guessing either).
//!
//! The counts live in memory and, after each failure, in the parameter store under
//! `/_cutover/auth-failures/<address>` (no application or environment prefix can start
//! with `_`), written as `cutover`; the server loads them when it starts, so a restart does
//! not reset a lockout. Writes stop once an address is locked out, so a flood costs at most
//! `max_failures` writes per address and window.
//!
//! Rejected: a new store table (a migration and conformance tests on both backends for what
//! the parameter store already keeps, with history), and counting per token name (an
//! unknown token has none).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_store::{ParamKey, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Where the counts are kept in the parameter store.
pub const FAILURES_PREFIX: &str = "/_cutover/auth-failures";

/// Environment variables that tune the limit (read by `cutover serve`).
pub const MAX_FAILURES_VAR: &str = "CUTOVER_AUTH_MAX_FAILURES";
pub const LOCKOUT_VAR: &str = "CUTOVER_AUTH_LOCKOUT_SECS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failed authentications allowed per address and window.
    pub max_failures: u32,
    /// The window in which failures are counted.
    pub window: Duration,
    /// How long an address over the limit is refused.
    pub lockout: Duration,
}

impl Default for FailureLimits {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
        }
    }
}

impl FailureLimits {
    /// The defaults (20 failures per 5 minutes, 5 minutes' lockout), changed by
    /// `CUTOVER_AUTH_MAX_FAILURES` and `CUTOVER_AUTH_LOCKOUT_SECS` (which sets the window too).
    pub fn from_env() -> Result<Self, String> {
        let mut limits = Self::default();
        if let Ok(raw) = std::env::var(MAX_FAILURES_VAR) {
            limits.max_failures = raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("{MAX_FAILURES_VAR}={raw:?} is not a positive whole number of failed authentications, e.g. 20")
            })?;
        }
        if let Ok(raw) = std::env::var(LOCKOUT_VAR) {
            let secs: u64 = raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("{LOCKOUT_VAR}={raw:?} is not a positive whole number of seconds, e.g. 300")
            })?;
            limits.lockout = Duration::from_secs(secs);
            limits.window = Duration::from_secs(secs);
        }
        Ok(limits)
    }
}

/// What is kept per address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    failures: u32,
    /// Start of the window being counted (unix ms).
    since_ms: i64,
    /// Refused until then (unix ms); 0: not locked out.
    locked_until_ms: i64,
}

pub struct FailureLimiter {
    limits: FailureLimits,
    store: Arc<dyn Store>,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl FailureLimiter {
    /// Loads the counts an earlier start left in the store.
    pub async fn load(store: Arc<dyn Store>, limits: FailureLimits) -> Result<Self, StoreError> {
        let mut records = HashMap::new();
        for p in store.param_list(FAILURES_PREFIX).await? {
            let Some(addr) = p.key.rsplit('/').next().and_then(address_of_segment) else {
                continue;
            };
            if let Ok(r) = serde_json::from_str::<Record>(&p.value) {
                records.insert(addr, r);
            }
        }
        Ok(Self {
            limits,
            store,
            records: Mutex::new(records),
        })
    }

    /// Seconds until `addr` may try again, if it is locked out now.
    pub fn locked(&self, addr: IpAddr, now_ms: i64) -> Option<u64> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let r = records.get(&canonical(addr))?;
        retry_after(r.locked_until_ms, now_ms)
    }

    /// Counts a failed authentication of `addr`; returns the seconds of lockout when this
    /// one went over the limit.
    pub async fn failed(&self, addr: IpAddr, now_ms: i64) -> Option<u64> {
        let addr = canonical(addr);
        let window = i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX);
        let lockout = i64::try_from(self.limits.lockout.as_millis()).unwrap_or(i64::MAX);
        let record = {
            let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
            let r = records.entry(addr).or_default();
            if r.locked_until_ms > now_ms {
                return retry_after(r.locked_until_ms, now_ms);
            }
            if now_ms.saturating_sub(r.since_ms) > window || r.locked_until_ms != 0 {
                *r = Record {
                    failures: 0,
                    since_ms: now_ms,
                    locked_until_ms: 0,
                };
            }
            r.failures = r.failures.saturating_add(1);
            if r.failures > self.limits.max_failures {
                r.locked_until_ms = now_ms.saturating_add(lockout);
            }
            *r
        };
        self.persist(addr, record).await;
        retry_after(record.locked_until_ms, now_ms)
    }

    async fn persist(&self, addr: IpAddr, record: Record) {
        let raw = format!("{FAILURES_PREFIX}/{}", segment_of_address(addr));
        let Ok(key) = ParamKey::parse(&raw) else {
            return;
        };
        let value = serde_json::to_string(&record).unwrap_or_default();
        if let Err(e) = self
            .store
            .param_put(&key, &value, cutover_engine::SYSTEM_ACTOR, None)
            .await
        {
            tracing::error!(error = %e, key = %key, "cannot record a failed authentication; the limit holds until a restart");
        }
    }
}

fn retry_after(locked_until_ms: i64, now_ms: i64) -> Option<u64> {
    let left = locked_until_ms.saturating_sub(now_ms);
    (left > 0).then(|| u64::try_from(left).unwrap_or(0).div_ceil(1000).max(1))
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

/// A key segment for an address: IPv6 colons become `-` (not allowed in keys).
fn segment_of_address(addr: IpAddr) -> String {
    addr.to_string().replace(':', "-")
}

fn address_of_segment(segment: &str) -> Option<IpAddr> {
    segment.replace('-', ":").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_key_segments() {
        for a in ["127.0.0.1", "::1", "2001:db8::7"] {
            let addr: IpAddr = a.parse().unwrap();
            let seg = segment_of_address(addr);
            assert!(
                ParamKey::parse(&format!("{FAILURES_PREFIX}/{seg}")).is_ok(),
                "{seg}"
            );
            assert_eq!(address_of_segment(&seg), Some(addr));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(10_001, 10_000), Some(1));
        assert_eq!(retry_after(12_500, 10_000), Some(3));
        assert_eq!(retry_after(10_000, 10_000), None);
        assert_eq!(retry_after(0, 10_000), None);
    }
}
