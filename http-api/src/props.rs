//! Bucket properties as Riak's JSON: `GET|PUT|DELETE /buckets/{b}/props`.
//!
//! The document is `{"props":{...}}` with Riak's field names. Quorums are
//! written as Riak writes them: symbolic values as strings (`"quorum"`),
//! counts as integers. A `PUT` is a partial update merged with the current
//! properties, then validated (every quorum must fit `n_val`); it is refused
//! whole on any bad field.
//!
//! Riak properties Starling does not implement are handled in two ways:
//! harmless tuning knobs that clients echo back (`young_vclock`,
//! `chash_keyfun`, ...) are accepted and ignored; anything that would change
//! behaviour the client relies on (non-empty commit hooks, `dvv_enabled:
//! false`, another bucket's `name`) is a `400`, as is any unknown field.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};
use storage::{BucketProps, Quorum};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::response::{self, ResponseBody};

/// Riak properties accepted on `PUT` and ignored.
const IGNORED_FIELDS: &[&str] = &[
    "young_vclock",
    "old_vclock",
    "small_vclock",
    "big_vclock",
    "chash_keyfun",
    "linkfun",
    "search",
    "backend",
    "write_once",
    "consistent",
    "bucket_type",
    "claimant",
    "active",
];

/// The `props` object of `bucket`.
pub fn to_json(bucket: &str, props: &BucketProps) -> Value {
    json!({
        "name": bucket,
        "n_val": props.n_val,
        "allow_mult": props.allow_mult,
        "last_write_wins": props.last_write_wins,
        "r": quorum_json(props.r),
        "w": quorum_json(props.w),
        "pr": quorum_json(props.pr),
        "pw": quorum_json(props.pw),
        "dw": quorum_json(props.dw),
        "rw": quorum_json(props.rw),
        "notfound_ok": props.notfound_ok,
        "basic_quorum": props.basic_quorum,
        "dvv_enabled": true,
        "precommit": [],
        "postcommit": [],
    })
}

fn quorum_json(quorum: Quorum) -> Value {
    match quorum {
        Quorum::Count(n) => Value::from(n),
        other => Value::from(other.to_string()),
    }
}

/// Applies the fields of a `{"props":{...}}` document to `current`.
pub fn merge(bucket: &str, current: &BucketProps, body: &[u8]) -> Result<BucketProps, ApiError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(fields) = document.get("props").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object with a \"props\" object, e.g. {\"props\":{\"n_val\":3}}",
        ));
    };
    let mut props = current.clone();
    for (name, value) in fields {
        apply(bucket, &mut props, name, value)?;
    }
    props
        .validate()
        .map_err(|e| ApiError::bad_request(format!("invalid bucket properties: {e}")))?;
    Ok(props)
}

fn apply(bucket: &str, props: &mut BucketProps, name: &str, value: &Value) -> Result<(), ApiError> {
    match name {
        "n_val" => props.n_val = count(name, value)?,
        "r" => props.r = quorum(name, value)?,
        "w" => props.w = quorum(name, value)?,
        "pr" => props.pr = quorum(name, value)?,
        "pw" => props.pw = quorum(name, value)?,
        "dw" => props.dw = quorum(name, value)?,
        "rw" => props.rw = quorum(name, value)?,
        "allow_mult" => props.allow_mult = boolean(name, value)?,
        "last_write_wins" => props.last_write_wins = boolean(name, value)?,
        "notfound_ok" => props.notfound_ok = boolean(name, value)?,
        "basic_quorum" => props.basic_quorum = boolean(name, value)?,
        "name" => {
            if value.as_str() != Some(bucket) {
                return Err(ApiError::bad_request(format!(
                    "the name property must be the bucket's own name {bucket:?}"
                )));
            }
        }
        "dvv_enabled" => {
            if !boolean(name, value)? {
                return Err(ApiError::bad_request(
                    "dvv_enabled cannot be turned off: Starling always uses dotted version vectors",
                ));
            }
        }
        "precommit" | "postcommit" => {
            if value.as_array().is_none_or(|hooks| !hooks.is_empty()) {
                return Err(ApiError::bad_request(format!(
                    "{name} hooks are not supported; the property must be an empty list"
                )));
            }
        }
        _ if IGNORED_FIELDS.contains(&name) => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "unknown bucket property {name:?}; supported: n_val, allow_mult, last_write_wins, \
                 r, w, pr, pw, dw, rw, notfound_ok, basic_quorum"
            )));
        }
    }
    Ok(())
}

fn count(name: &str, value: &Value) -> Result<u32, ApiError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer")))
}

fn quorum(name: &str, value: &Value) -> Result<Quorum, ApiError> {
    let parsed = match value {
        Value::Number(_) => count(name, value).map(Quorum::Count).ok(),
        Value::String(text) => Quorum::parse(text).ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be an integer or one of \"one\", \"quorum\", \"all\", \"default\""
        ))
    })
}

fn boolean(name: &str, value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be true or false"
        ))),
    }
}

/// Whether a request body is declared as JSON (Riak answers `415`
/// otherwise).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.essence_str() == "application/json");
    if is_json {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(
            "bucket properties must be sent as Content-Type: application/json",
        ))
    }
}

/// `GET /buckets/{b}/props`.
pub async fn get<B: Backend>(
    backend: &B,
    bucket: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let props = backend
        .bucket_props(Bytes::copy_from_slice(bucket.as_bytes()))
        .await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "props": to_json(bucket, &props) }),
    ))
}

/// `PUT /buckets/{b}/props` with the already-read body.
pub async fn put<B: Backend>(
    backend: &B,
    bucket: &str,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let name = Bytes::copy_from_slice(bucket.as_bytes());
    let current = backend.bucket_props(name.clone()).await?;
    let props = merge(bucket, &current, body)?;
    backend.set_bucket_props(name, props).await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /buckets/{b}/props`: back to the defaults.
pub async fn reset<B: Backend>(
    backend: &B,
    bucket: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    backend
        .reset_bucket_props(Bytes::copy_from_slice(bucket.as_bytes()))
        .await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// The `props` member of a legacy `/riak/{b}` document.
pub async fn legacy_fields<B: Backend>(
    backend: &B,
    bucket: &str,
) -> Result<Map<String, Value>, ApiError> {
    let props = backend
        .bucket_props(Bytes::copy_from_slice(bucket.as_bytes()))
        .await?;
    let mut map = Map::new();
    map.insert("props".to_owned(), to_json(bucket, &props));
    Ok(map)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_riak_field_names_and_spellings() {
        let props = BucketProps::default();
        let v = to_json("b", &props);
        assert_eq!(v["n_val"], 3);
        assert_eq!(v["r"], "quorum");
        assert_eq!(v["pr"], 0);
        assert_eq!(v["name"], "b");
        assert_eq!(v["allow_mult"], true);
    }

    #[test]
    fn partial_updates_merge_and_validate() {
        let current = BucketProps::default();
        let merged = merge(
            "b",
            &current,
            br#"{"props":{"n_val":5,"r":"all","w":2,"allow_mult":false}}"#,
        )
        .unwrap();
        assert_eq!(merged.n_val, 5);
        assert_eq!(merged.r, Quorum::All);
        assert_eq!(merged.w, Quorum::Count(2));
        assert!(!merged.allow_mult);
        assert_eq!(merged.dw, current.dw);
        // Echoing a whole GET document back is accepted.
        let echoed = json!({ "props": to_json("b", &merged) }).to_string();
        assert_eq!(merge("b", &current, echoed.as_bytes()).unwrap(), merged);
    }

    #[test]
    fn bad_documents_are_400() {
        for bad in [
            &b"not json"[..],
            br#"{"n_val":3}"#,
            br#"{"props":{"n_val":"three"}}"#,
            br#"{"props":{"n_val":0}}"#,
            br#"{"props":{"w":5}}"#,
            br#"{"props":{"r":"most"}}"#,
            br#"{"props":{"allow_mult":"yes"}}"#,
            br#"{"props":{"colour":"blue"}}"#,
            br#"{"props":{"precommit":[{"mod":"m","fun":"f"}]}}"#,
            br#"{"props":{"name":"other"}}"#,
        ] {
            let err = merge("b", &BucketProps::default(), bad).unwrap_err();
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(bad));
        }
    }
}
