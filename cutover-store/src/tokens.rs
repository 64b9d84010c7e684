//! The stored shape of API tokens: who a token names, what it grants, and
//! whether it still works. The store keeps a hash of each secret, never the
//! secret, and finds a token by that hash; whether a found token may be used
//! (expired, revoked) and what it may do is the caller's decision.
//!
//! Rejected: deleting revoked tokens (the audit log names them; a list that
//! forgets them makes an old entry unexplainable) and storing roles in their
//! own table (grants are read with the token on every request, as one value).

use cutover_core::Grants;
use serde::{Deserialize, Serialize};

/// A token to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The principal: the actor of every change made with the token.
    pub name: String,
    /// The hash of the secret (the caller's choice of function, e.g. SHA-256 hex).
    pub secret_hash: String,
    pub grants: Grants,
    pub created_by: String,
    pub expires_at_ms: Option<i64>,
}

/// A stored token, without its secret hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Increasing in creation order.
    pub id: i64,
    pub name: String,
    pub grants: Grants,
    pub created_at_ms: i64,
    pub created_by: String,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub revoked_by: Option<String>,
}

impl TokenRecord {
    /// Neither revoked nor expired at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}
