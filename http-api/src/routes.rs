//! The route table and path parsing.
//!
//! [`ROUTES`] is the single list of what the server serves: the router
//! matches against it, `405` answers take their `Allow` header from it, and
//! the OpenAPI test compares it with `openapi.yaml`, so the document and the
//! server cannot drift apart silently.
//!
//! Path segments are split *before* percent-decoding (so a key may contain an
//! encoded `/`), then decoded strictly: a `%` not followed by two hex digits
//! is a `400`, as is a name that is not UTF-8 once decoded. `+` decodes to a
//! space, as Riak's `http_url_encoding = on` (its default) does.
//!
//! This module does not look at query strings, headers or bodies.

use crate::error::ApiError;

/// What a route serves; the handler is chosen from this and the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `GET /`: the resource list.
    Root,
    /// `GET /ping`.
    Ping,
    /// `GET /stats`.
    Stats,
    /// `GET /buckets?buckets=true|stream`.
    Buckets,
    /// `/buckets/{bucket}/props`.
    Props,
    /// `/buckets/{bucket}/keys`: key listing and server-chosen keys.
    Keys,
    /// `/buckets/{bucket}/keys/{key}` and `/riak/{bucket}/{key}`.
    Object,
    /// `/buckets/{bucket}/keys/{key}/preflist`.
    Preflist,
    /// Legacy `/riak/{bucket}`: props (and keys) in one document, props
    /// update, server-chosen keys.
    LegacyBucket,
    /// `/metrics` and `/admin/...`: passed to the backend.
    Admin,
}

/// One entry of the route table.
#[derive(Debug)]
pub struct RouteSpec {
    /// The path as OpenAPI spells it, e.g. `/buckets/{bucket}/keys/{key}`.
    pub template: &'static str,
    /// Methods served, upper case.
    pub methods: &'static [&'static str],
    /// What the route serves.
    pub resource: Resource,
    /// Whether URLs in responses use the legacy `/riak/` form.
    pub legacy: bool,
    /// Whether deeper paths match too (the last parameter then takes the
    /// rest of the path).
    pub prefix: bool,
}

const READ: &[&str] = &["GET", "HEAD"];
const PROPS: &[&str] = &["GET", "HEAD", "PUT", "DELETE"];
const KEYS: &[&str] = &["GET", "HEAD", "POST"];
const OBJECT: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];
const LEGACY_BUCKET: &[&str] = &["GET", "HEAD", "PUT", "POST"];
const ADMIN: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];

const fn route(
    template: &'static str,
    methods: &'static [&'static str],
    resource: Resource,
) -> RouteSpec {
    RouteSpec {
        template,
        methods,
        resource,
        legacy: false,
        prefix: false,
    }
}

/// Every route the server serves.
pub static ROUTES: &[RouteSpec] = &[
    route("/", READ, Resource::Root),
    route("/ping", READ, Resource::Ping),
    route("/stats", READ, Resource::Stats),
    route("/buckets", READ, Resource::Buckets),
    route("/buckets/{bucket}/props", PROPS, Resource::Props),
    route("/buckets/{bucket}/keys", KEYS, Resource::Keys),
    route("/buckets/{bucket}/keys/{key}", OBJECT, Resource::Object),
    route(
        "/buckets/{bucket}/keys/{key}/preflist",
        READ,
        Resource::Preflist,
    ),
    route("/types/{type}/buckets", READ, Resource::Buckets),
    route(
        "/types/{type}/buckets/{bucket}/props",
        PROPS,
        Resource::Props,
    ),
    route("/types/{type}/buckets/{bucket}/keys", KEYS, Resource::Keys),
    route(
        "/types/{type}/buckets/{bucket}/keys/{key}",
        OBJECT,
        Resource::Object,
    ),
    route(
        "/types/{type}/buckets/{bucket}/keys/{key}/preflist",
        READ,
        Resource::Preflist,
    ),
    RouteSpec {
        legacy: true,
        ..route("/riak/{bucket}", LEGACY_BUCKET, Resource::LegacyBucket)
    },
    RouteSpec {
        legacy: true,
        ..route("/riak/{bucket}/{key}", OBJECT, Resource::Object)
    },
    route("/metrics", READ, Resource::Admin),
    RouteSpec {
        prefix: true,
        ..route("/admin/{resource}", ADMIN, Resource::Admin)
    },
];

/// The only bucket type this server implements.
pub const DEFAULT_BUCKET_TYPE: &str = "default";

/// A matched route with its decoded path parameters.
#[derive(Debug)]
pub struct Match {
    /// The route.
    pub spec: &'static RouteSpec,
    /// Decoded bucket, if the route has one.
    pub bucket: Option<String>,
    /// Decoded key, if the route has one.
    pub key: Option<String>,
}

/// The segments of each route's template, split once.
static TEMPLATES: std::sync::LazyLock<Vec<Vec<&'static str>>> = std::sync::LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|spec| {
            spec.template
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect()
});

/// Finds the route for `raw_path` (percent-encoded, without the query).
///
/// `Ok(None)`: no route has this shape (a `404`). Errors are bad encodings
/// or an unknown bucket type.
pub fn find(raw_path: &str) -> Result<Option<Match>, ApiError> {
    let Some(path) = raw_path.strip_prefix('/') else {
        return Ok(None);
    };
    // A single trailing slash is tolerated (`/buckets/b/keys/`), as Riak's
    // dispatcher does.
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    for (spec, template) in ROUTES.iter().zip(TEMPLATES.iter()) {
        let shape_fits = if spec.prefix {
            segments.len() >= template.len()
        } else {
            segments.len() == template.len()
        };
        if !shape_fits {
            continue;
        }
        let literals_match = template
            .iter()
            .zip(&segments)
            .all(|(t, s)| t.starts_with('{') || t == s);
        if !literals_match {
            continue;
        }
        let mut found = Match {
            spec,
            bucket: None,
            key: None,
        };
        for (t, s) in template.iter().zip(&segments) {
            match *t {
                "{bucket}" => found.bucket = Some(decode_segment(s, "bucket")?),
                "{key}" => found.key = Some(decode_segment(s, "key")?),
                "{type}" => {
                    let bucket_type = decode_segment(s, "bucket type")?;
                    if bucket_type != DEFAULT_BUCKET_TYPE {
                        return Err(ApiError::not_found(format!(
                            "no such bucket type {bucket_type:?}: this server implements only \
                             the \"default\" bucket type"
                        )));
                    }
                }
                _ => {}
            }
        }
        return Ok(Some(found));
    }
    Ok(None)
}

/// Decodes one path segment: strict `%XX`, `+` as space, UTF-8 required.
pub fn decode_segment(raw: &str, what: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                let Some(byte) = hex else {
                    return Err(ApiError::bad_request(format!(
                        "bad percent-encoding in the {what}: '%' must be followed by two hex \
                         digits"
                    )));
                };
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        ApiError::bad_request(format!(
            "the {what} is not valid UTF-8 once percent-decoded"
        ))
    })
}

/// Characters left as they are when a bucket or key is put into a URL
/// (RFC 3986 unreserved); everything else is percent-encoded, `+` included
/// so that it does not come back as a space.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a bucket or key for use as one path segment.
pub fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, PATH_SEGMENT).to_string()
}

/// The URL of an object, in the form the request used.
pub fn object_url(legacy: bool, bucket: &str, key: &str) -> String {
    if legacy {
        format!("/riak/{}/{}", encode_segment(bucket), encode_segment(key))
    } else {
        format!(
            "/buckets/{}/keys/{}",
            encode_segment(bucket),
            encode_segment(key)
        )
    }
}

/// The URL of a bucket, in the form the request used.
pub fn bucket_url(legacy: bool, bucket: &str) -> String {
    if legacy {
        format!("/riak/{}", encode_segment(bucket))
    } else {
        format!("/buckets/{}", encode_segment(bucket))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn matches_templates_and_decodes_names() {
        let m = find("/buckets/my%20b/keys/a%2Fb+c").unwrap().unwrap();
        assert_eq!(m.spec.resource, Resource::Object);
        assert_eq!(m.bucket.as_deref(), Some("my b"));
        assert_eq!(m.key.as_deref(), Some("a/b c"));
        let m = find("/types/default/buckets/b/keys/k/preflist")
            .unwrap()
            .unwrap();
        assert_eq!(m.spec.resource, Resource::Preflist);
        let m = find("/riak/b/k").unwrap().unwrap();
        assert!(m.spec.legacy);
        assert_eq!(
            find("/admin/ring/partitions")
                .unwrap()
                .unwrap()
                .spec
                .resource,
            Resource::Admin
        );
        assert_eq!(find("/").unwrap().unwrap().spec.resource, Resource::Root);
        assert_eq!(
            find("/buckets/b/keys/").unwrap().unwrap().spec.resource,
            Resource::Keys
        );
        assert!(find("/nothing/here").unwrap().is_none());
        assert!(find("/buckets/b/keys/k/extra/deep").unwrap().is_none());
    }

    #[test]
    fn refuses_bad_encodings_and_other_bucket_types() {
        assert_eq!(find("/buckets/b/keys/%ZZ").unwrap_err().status, 400);
        assert_eq!(find("/buckets/b/keys/%4").unwrap_err().status, 400);
        assert_eq!(find("/buckets/b/keys/%FF").unwrap_err().status, 400);
        assert_eq!(
            find("/types/maps/buckets/b/keys/k").unwrap_err().status,
            404
        );
    }

    #[test]
    fn encoding_round_trips() {
        for name in ["plain", "a b", "a+b", "a/b", "ünï", "%41"] {
            assert_eq!(decode_segment(&encode_segment(name), "key").unwrap(), name);
        }
    }
}
