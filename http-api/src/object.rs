//! Objects: `GET|HEAD|PUT|POST|DELETE /buckets/{b}/keys/{k}`, server-chosen
//! keys (`POST /buckets/{b}/keys`), and how an [`Object`] with siblings is
//! shown.
//!
//! How siblings are shown:
//! - one live sibling: `200` with the value, its metadata as headers, `ETag`
//!   (the vtag) and `Last-Modified`;
//! - several: `300 Multiple Choices`, either `Siblings:\n<vtag>\n...` as
//!   `text/plain` or, when `Accept` prefers it, `multipart/mixed` with every
//!   sibling; `?vtag=` picks one;
//! - only tombstones: `404` with `X-Riak-Deleted: true` and the context, so
//!   a client can write over the delete causally.
//!
//! Tombstones next to live siblings are **not** shown (ARCHITECTURE.md): the
//! client sees the live values, and a write with the read's context
//! supersedes the tombstones too. Riak would list them as siblings marked
//! `X-Riak-Deleted`; hiding them spares clients a value they cannot use.
//!
//! `X-Riak-Vclock` accompanies every response that shows the values it
//! covers (`200`, `300`, tombstone `404`). A `204` after a write carries none:
//! the object may hold concurrent siblings the writer has not seen, and
//! handing it their context would let its next write drop them unseen.
//!
//! This module does not decide quorums or store anything; it builds requests
//! for the [`Backend`] and renders its answers.

use bytes::Bytes;
use http::header::{
    CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, LAST_MODIFIED, LINK, LOCATION,
};
use http::{HeaderMap, Response, StatusCode};
use rand::Rng;
use storage::{Content, Metadata, Object, Quorum, Sibling, VersionVector};

use crate::backend::{Backend, DeleteRequest, GetRequest, PutRequest, ReadQuorums, WriteQuorums};
use crate::conditional::{self, Validators};
use crate::error::ApiError;
use crate::multipart::{self, Part};
use crate::query::Query;
use crate::response::{self, ResponseBody};
use crate::{ServeConfig, link};

/// The request header carrying the causal context.
pub const X_RIAK_VCLOCK: HeaderName = HeaderName::from_static("x-riak-vclock");
/// Marks a response about a deleted object.
pub const X_RIAK_DELETED: HeaderName = HeaderName::from_static("x-riak-deleted");
/// Prefix of user metadata headers (lower case, as hyper hands them over).
pub const USER_META_PREFIX: &str = "x-riak-meta-";

/// Which object a request addresses and in which URL form.
#[derive(Debug, Clone)]
pub struct Target {
    /// Decoded bucket name.
    pub bucket: String,
    /// Decoded key.
    pub key: String,
    /// Whether the request used `/riak/...` paths.
    pub legacy: bool,
}

/// Checks a bucket name against the limits.
pub fn check_bucket(config: &ServeConfig, bucket: &str) -> Result<(), ApiError> {
    check_name("bucket", bucket, config.bucket_size_bytes_max)
}

/// Checks bucket and key against the limits.
pub fn check_target(config: &ServeConfig, target: &Target) -> Result<(), ApiError> {
    check_bucket(config, &target.bucket)?;
    check_name("key", &target.key, config.key_size_bytes_max)
}

fn check_name(what: &str, name: &str, size_bytes_max: usize) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the {what} must not be empty"
        )));
    }
    if name.len() > size_bytes_max {
        return Err(ApiError::bad_request(format!(
            "the {what} is {} bytes; the limit is {size_bytes_max} bytes",
            name.len()
        )));
    }
    Ok(())
}

/// Checks integer quorum values against the bucket's `n_val` (a value
/// above it is a `400`). Symbolic values always fit, so the bucket's
/// properties are fetched only when an integer was given.
pub async fn check_quorums<B: Backend>(
    backend: &B,
    bucket: &str,
    quorums: &[(&'static str, Option<Quorum>)],
) -> Result<(), ApiError> {
    if !quorums
        .iter()
        .any(|(_, q)| matches!(q, Some(Quorum::Count(_))))
    {
        return Ok(());
    }
    let props = backend
        .bucket_props(Bytes::copy_from_slice(bucket.as_bytes()))
        .await?;
    for (name, quorum) in quorums {
        if let Some(quorum) = quorum {
            quorum
                .resolve(name, props.n_val, Quorum::Quorum)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    Ok(())
}

fn read_quorums(query: &Query) -> Result<ReadQuorums, ApiError> {
    Ok(ReadQuorums {
        r: query.quorum("r")?,
        pr: query.quorum("pr")?,
        notfound_ok: query.boolean("notfound_ok")?,
        basic_quorum: query.boolean("basic_quorum")?,
    })
}

fn get_request(
    target: &Target,
    quorums: ReadQuorums,
    query: &Query,
) -> Result<GetRequest, ApiError> {
    Ok(GetRequest {
        bucket: bytes_of(&target.bucket),
        key: bytes_of(&target.key),
        quorums,
        timeout: query.timeout()?,
    })
}

fn bytes_of(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

/// `GET`/`HEAD` of one key.
pub async fn get<B: Backend>(
    backend: &B,
    config: &ServeConfig,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    check_target(config, target)?;
    let quorums = read_quorums(query)?;
    check_quorums(
        backend,
        &target.bucket,
        &[("r", quorums.r), ("pr", quorums.pr)],
    )
    .await?;
    let request = get_request(target, quorums, query)?;
    let Some(object) = backend.get(request).await? else {
        return Err(ApiError::not_found("not found"));
    };
    let context = seal(backend, target, &object.version);
    let live: Vec<&Sibling> = object.live_siblings().collect();
    if live.is_empty() {
        return Err(deleted(&context));
    }
    let accept = header_str(headers, http::header::ACCEPT);
    let view = match query.value("vtag") {
        Some(vtag) => match live.iter().find(|s| s.vtag() == vtag) {
            Some(sibling) => View::One(sibling),
            None => {
                return Err(ApiError::not_found(format!(
                    "not found: no sibling has vtag {vtag:?}"
                )));
            }
        },
        None if live.len() == 1 => View::One(live[0]),
        None => View::Siblings(&live),
    };
    let validators = view.validators();
    if conditional::not_modified(headers, &validators) {
        let mut response = response::empty(StatusCode::NOT_MODIFIED);
        set(response.headers_mut(), ETAG, &quoted(&validators.etag));
        set(
            response.headers_mut(),
            LAST_MODIFIED,
            &conditional::http_date(validators.last_modified_us),
        );
        set(response.headers_mut(), X_RIAK_VCLOCK, &context);
        return Ok(response);
    }
    Ok(render(
        view,
        target,
        &context,
        accept,
        Prefer::Text,
        StatusCode::OK,
    ))
}

/// What a response shows of an object.
enum View<'a> {
    One(&'a Sibling),
    Siblings(&'a [&'a Sibling]),
}

impl View<'_> {
    fn validators(&self) -> Validators {
        match self {
            View::One(s) => Validators {
                etag: s.vtag(),
                last_modified_us: s.content.meta.last_modified_us,
            },
            View::Siblings(siblings) => siblings_validators(siblings),
        }
    }
}

fn siblings_validators(siblings: &[&Sibling]) -> Validators {
    let joined: Vec<String> = siblings.iter().map(|s| s.vtag()).collect();
    let hash = xxhash_rust::xxh3::xxh3_128(joined.join("\n").as_bytes());
    Validators {
        etag: base62(hash),
        last_modified_us: siblings
            .iter()
            .map(|s| s.content.meta.last_modified_us)
            .max()
            .unwrap_or(0),
    }
}

/// The validators of whatever live value `object` holds (`None`: nothing
/// live).
fn object_validators(object: Option<&Object>) -> Option<Validators> {
    let live: Vec<&Sibling> = object?.live_siblings().collect();
    match live.as_slice() {
        [] => None,
        [one] => Some(View::One(one).validators()),
        many => Some(siblings_validators(many)),
    }
}

fn base62(mut n: u128) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
    }
    out.into_iter().rev().map(char::from).collect()
}

/// Which representation of siblings wins a tie in `Accept` negotiation:
/// webmachine offers `text/plain` first for `GET` and `multipart/mixed` first
/// for a write's `returnbody`.
#[derive(Clone, Copy)]
enum Prefer {
    Text,
    Multipart,
}

fn render(
    view: View<'_>,
    target: &Target,
    context: &str,
    accept: Option<&str>,
    prefer: Prefer,
    status: StatusCode,
) -> Response<ResponseBody> {
    let validators = view.validators();
    let mut response = match view {
        View::One(sibling) => {
            let mut response = response::full(
                status,
                &content_type_of(&sibling.content.meta),
                sibling.content.value.clone(),
            );
            metadata_headers(response.headers_mut(), target, &sibling.content.meta);
            response
        }
        View::Siblings(siblings) => {
            let offered = match prefer {
                Prefer::Text => ["text/plain", "multipart/mixed"],
                Prefer::Multipart => ["multipart/mixed", "text/plain"],
            };
            let status = if status == StatusCode::OK {
                StatusCode::MULTIPLE_CHOICES
            } else {
                status
            };
            match response::negotiate(accept, &offered) {
                Some("multipart/mixed") => {
                    let parts: Vec<Part<'_>> =
                        siblings.iter().map(|s| sibling_part(target, s)).collect();
                    let (boundary, body) = multipart::encode(&parts);
                    response::full(
                        status,
                        &format!("multipart/mixed; boundary={boundary}"),
                        body,
                    )
                }
                _ => {
                    let mut body = String::from("Siblings:\n");
                    for sibling in siblings {
                        body.push_str(&sibling.vtag());
                        body.push('\n');
                    }
                    response::full(status, response::TEXT_PLAIN, body)
                }
            }
        }
    };
    let headers = response.headers_mut();
    set(headers, X_RIAK_VCLOCK, context);
    set(headers, ETAG, &quoted(&validators.etag));
    set(
        headers,
        LAST_MODIFIED,
        &conditional::http_date(validators.last_modified_us),
    );
    response
}

fn sibling_part<'a>(target: &Target, sibling: &'a Sibling) -> Part<'a> {
    let meta = &sibling.content.meta;
    let mut headers = vec![("Content-Type".to_owned(), content_type_of(meta))];
    if let Some(encoding) = &meta.content_encoding {
        headers.push(("Content-Encoding".to_owned(), encoding.clone()));
    }
    headers.push((
        "Link".to_owned(),
        link::format(target.legacy, &target.bucket, &meta.links),
    ));
    headers.push(("Etag".to_owned(), sibling.vtag()));
    headers.push((
        "Last-Modified".to_owned(),
        conditional::http_date(meta.last_modified_us),
    ));
    for (name, value) in &meta.user_meta {
        headers.push((format!("X-Riak-Meta-{name}"), value.clone()));
    }
    Part {
        headers,
        body: &sibling.content.value,
    }
}

fn content_type_of(meta: &Metadata) -> String {
    let base = if meta.content_type.is_empty() {
        "application/octet-stream"
    } else {
        &meta.content_type
    };
    match &meta.charset {
        Some(charset) => format!("{base}; charset={charset}"),
        None => base.to_owned(),
    }
}

fn metadata_headers(headers: &mut HeaderMap, target: &Target, meta: &Metadata) {
    if let Some(encoding) = &meta.content_encoding {
        set(headers, CONTENT_ENCODING, encoding);
    }
    set(
        headers,
        LINK,
        &link::format(target.legacy, &target.bucket, &meta.links),
    );
    for (name, value) in &meta.user_meta {
        let name = HeaderName::from_bytes(format!("{USER_META_PREFIX}{name}").as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn seal<B: Backend>(backend: &B, target: &Target, version: &VersionVector) -> String {
    storage::context::encode(
        backend.context_key(),
        target.bucket.as_bytes(),
        target.key.as_bytes(),
        version,
    )
}

/// The `404` for a key whose siblings are all tombstones.
fn deleted(context: &str) -> ApiError {
    ApiError::not_found("not found")
        .with_header(X_RIAK_VCLOCK, context)
        .with_header(X_RIAK_DELETED, "true")
}

/// Decodes and verifies the client's `X-Riak-Vclock`, if any.
fn client_context<B: Backend>(
    backend: &B,
    target: &Target,
    headers: &HeaderMap,
) -> Result<Option<VersionVector>, ApiError> {
    let Some(value) = headers.get(X_RIAK_VCLOCK) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Riak-Vclock is not valid header text"))?;
    storage::context::decode(
        backend.context_key(),
        target.bucket.as_bytes(),
        target.key.as_bytes(),
        text,
    )
    .map(Some)
    .map_err(|e| ApiError::bad_request(format!("X-Riak-Vclock refused: {e}")))
}

/// A write's content, parsed from its headers (the value is added later).
pub fn parse_metadata(target: &Target, headers: &HeaderMap) -> Result<Metadata, ApiError> {
    let Some(raw) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::bad_request("Missing Content-Type request header"));
    };
    let text = raw.to_str().unwrap_or("");
    let not_a_type = || {
        ApiError::unsupported_media_type(format!(
            "{text:?} is not a valid media type for the Content-Type header"
        ))
    };
    let mime: mime::Mime = text.parse().map_err(|_| not_a_type())?;
    let mut content_type = mime.essence_str().to_owned();
    for (name, value) in mime.params() {
        if name != mime::CHARSET {
            content_type.push_str(&format!("; {name}={value}"));
        }
    }
    let charset = mime.get_param(mime::CHARSET).map(|c| c.as_str().to_owned());
    let content_encoding = match headers.get(CONTENT_ENCODING) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Content-Encoding is not valid header text"))?
                .to_owned(),
        ),
        None => None,
    };
    let mut user_meta = Vec::new();
    for (name, value) in headers {
        let Some(meta_name) = name.as_str().strip_prefix(USER_META_PREFIX) else {
            continue;
        };
        if meta_name.is_empty() {
            return Err(ApiError::bad_request(
                "an X-Riak-Meta- header needs a name after the prefix",
            ));
        }
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::bad_request(format!("the value of X-Riak-Meta-{meta_name} is not UTF-8"))
        })?;
        user_meta.push((meta_name.to_owned(), value.to_owned()));
    }
    let mut link_values = Vec::new();
    for value in headers.get_all(LINK) {
        link_values.push(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Link is not valid header text"))?,
        );
    }
    let links = link::parse(link_values.into_iter(), &target.bucket)?;
    Ok(Metadata {
        content_type,
        charset,
        content_encoding,
        user_meta,
        links,
        last_modified_us: 0,
    })
}

/// Reads the object for a conditional write and checks the conditions.
/// Returns the object's version, used as the write's context when the client
/// sent none (so that `If-Match` works like a compare-and-set on a sibling-
/// free object instead of creating a sibling).
async fn check_conditions<B: Backend>(
    backend: &B,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Option<VersionVector>, ApiError> {
    if !conditional::is_conditional(headers) {
        return Ok(None);
    }
    let current = backend
        .get(get_request(target, read_quorums(query)?, query)?)
        .await?;
    conditional::check_write(headers, object_validators(current.as_ref()).as_ref())?;
    Ok(current.map(|o| o.version))
}

/// Everything about a write that can be checked before reading its body.
#[derive(Debug)]
pub struct PreparedWrite {
    target: Target,
    meta: Metadata,
    context: Option<VersionVector>,
    quorums: WriteQuorums,
    timeout: Option<std::time::Duration>,
    returnbody: bool,
    create: bool,
}

/// Validates a `PUT`/`POST` from its path, query and headers, so a bad
/// request is refused before its body is read. For `create`,
/// `target.key` is ignored and a fresh key chosen.
pub async fn prepare_put<B: Backend>(
    backend: &B,
    config: &ServeConfig,
    mut target: Target,
    query: &Query,
    headers: &HeaderMap,
    create: bool,
) -> Result<PreparedWrite, ApiError> {
    if create {
        target.key = unique_key();
    }
    check_target(config, &target)?;
    let quorums = WriteQuorums {
        w: query.quorum("w")?,
        dw: query.quorum("dw")?,
        pw: query.quorum("pw")?,
        rw: None,
    };
    let timeout = query.timeout()?;
    let meta = parse_metadata(&target, headers)?;
    let mut context = client_context(backend, &target, headers)?;
    check_quorums(
        backend,
        &target.bucket,
        &[("w", quorums.w), ("dw", quorums.dw), ("pw", quorums.pw)],
    )
    .await?;
    if !create {
        let read_context = check_conditions(backend, &target, query, headers).await?;
        context = context.or(read_context);
    }
    Ok(PreparedWrite {
        target,
        meta,
        context,
        quorums,
        timeout,
        returnbody: query.is_true("returnbody"),
        create,
    })
}

/// Stores a prepared write with its body and renders the answer.
pub async fn put<B: Backend>(
    backend: &B,
    prepared: PreparedWrite,
    value: Bytes,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let PreparedWrite {
        target,
        meta,
        context,
        quorums,
        timeout,
        returnbody,
        create,
    } = prepared;
    let request = PutRequest {
        bucket: bytes_of(&target.bucket),
        key: bytes_of(&target.key),
        context,
        content: Content {
            value: value.to_vec(),
            meta,
            deleted: false,
        },
        quorums,
        timeout,
    };
    let object = backend.put(request).await?;
    let status = if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let live: Vec<&Sibling> = object.live_siblings().collect();
    let mut response = if returnbody && !live.is_empty() {
        let context = seal(backend, &target, &object.version);
        let view = if live.len() == 1 {
            View::One(live[0])
        } else {
            View::Siblings(&live)
        };
        render(
            view,
            &target,
            &context,
            header_str(headers, http::header::ACCEPT),
            Prefer::Multipart,
            status,
        )
    } else if create {
        // An empty body, typed so that clients (and the OpenAPI document's
        // `201` content) see what it is.
        response::full(StatusCode::CREATED, response::TEXT_PLAIN, Bytes::new())
    } else {
        response::empty(StatusCode::NO_CONTENT)
    };
    if create {
        set(
            response.headers_mut(),
            LOCATION,
            &crate::routes::object_url(target.legacy, &target.bucket, &target.key),
        );
    }
    Ok(response)
}

/// `DELETE` of one key. Without a context the object is read first and
/// its version used, as Riak does, so a plain `DELETE` removes every value
/// it saw; a key with no live value is a `404`.
pub async fn delete<B: Backend>(
    backend: &B,
    config: &ServeConfig,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    check_target(config, target)?;
    let quorums = WriteQuorums {
        w: query.quorum("w")?,
        dw: query.quorum("dw")?,
        pw: query.quorum("pw")?,
        rw: query.quorum("rw")?,
    };
    let read = read_quorums(query)?;
    check_quorums(
        backend,
        &target.bucket,
        &[
            ("w", quorums.w),
            ("dw", quorums.dw),
            ("pw", quorums.pw),
            ("rw", quorums.rw),
            ("r", read.r),
            ("pr", read.pr),
        ],
    )
    .await?;
    let mut context = client_context(backend, target, headers)?;
    let read_context = check_conditions(backend, target, query, headers).await?;
    context = context.or(read_context);
    if context.is_none() {
        match backend.get(get_request(target, read, query)?).await? {
            Some(object) if object.live_siblings().next().is_some() => {
                context = Some(object.version)
            }
            _ => return Err(ApiError::not_found("not found")),
        }
    }
    backend
        .delete(DeleteRequest {
            bucket: bytes_of(&target.bucket),
            key: bytes_of(&target.key),
            context,
            quorums,
            timeout: query.timeout()?,
        })
        .await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// A random url-safe key: 22 base-62 characters (131 bits), like Riak's
/// `unique_id_62`.
fn unique_key() -> String {
    base62(rand::rng().random::<u128>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target() -> Target {
        Target {
            bucket: "b".into(),
            key: "k".into(),
            legacy: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn metadata_is_parsed_from_headers() {
        let meta = parse_metadata(
            &target(),
            &headers(&[
                ("content-type", "text/plain; charset=UTF-8; format=flowed"),
                ("content-encoding", "gzip"),
                ("x-riak-meta-Color", "blue"),
                ("link", "</buckets/b2/keys/k2>; riaktag=\"next\""),
            ]),
        )
        .unwrap();
        assert_eq!(meta.content_type, "text/plain; format=flowed");
        assert_eq!(meta.charset.as_deref(), Some("utf-8"));
        assert_eq!(meta.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(
            meta.user_meta,
            vec![("color".to_owned(), "blue".to_owned())]
        );
        assert_eq!(meta.links.len(), 1);
        assert_eq!(
            content_type_of(&meta),
            "text/plain; format=flowed; charset=utf-8"
        );
    }

    #[test]
    fn content_type_is_required_and_checked() {
        assert_eq!(
            parse_metadata(&target(), &headers(&[])).unwrap_err().status,
            400
        );
        assert_eq!(
            parse_metadata(&target(), &headers(&[("content-type", "not a type")]))
                .unwrap_err()
                .status,
            415
        );
    }

    #[test]
    fn server_chosen_keys_are_url_safe_and_distinct() {
        let (a, b) = (unique_key(), unique_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
