//! The typed query strings that authorization depends on, decoded once by the same
//! extractor for the policy (`auth`) and the handler.
//!
//! A list route whose answer depends on `?env=` or `?prefix=` is authorized on that value.
//! The policy used to pick it out of the raw query string itself while the handler decoded
//! it with axum's `Query`, so `?%65nv=stage` named no environment to the policy and `stage`
//! to the handler. Both now call [`parse`] with the same type; handlers still filter what
//! they answer by what the token may see. Rejected: a request extension carrying the value
//! from the middleware to the handler (a handler that forgot to read it would fall back to
//! its own decoding).

use axum::extract::Query;
use axum::http::Uri;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `GET /api/v1/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunListQuery {
    /// Only this environment's runs.
    pub env: Option<String>,
    /// Newest first, at most this many (1..1000, default 20).
    pub limit: Option<u32>,
}

/// `GET /api/v1/params`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ParamListQuery {
    /// Only keys starting with this path, e.g. `/shop-prod/` (default `/`: every key).
    pub prefix: Option<String>,
}

/// Decodes the query string of `uri` into `T`, exactly as the handler's `Query<T>` does; a
/// query that does not decode is a 400.
pub(crate) fn parse<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_keys_and_values_decode_like_the_handler_sees_them() {
        let uri: Uri = "/api/v1/runs?%65nv=st%61ge&limit=3".parse().unwrap();
        let q: RunListQuery = parse(&uri).unwrap();
        assert_eq!(q.env.as_deref(), Some("stage"));
        assert_eq!(q.limit, Some(3));
        let uri: Uri = "/api/v1/params?prefix=%2Fshop-prod%2Fenv".parse().unwrap();
        let q: ParamListQuery = parse(&uri).unwrap();
        assert_eq!(q.prefix.as_deref(), Some("/shop-prod/env"));
    }
}
