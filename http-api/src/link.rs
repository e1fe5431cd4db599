//! Riak's `Link` header: `</buckets/B/keys/K>; riaktag="T"` entries, comma
//! separated, plus the `</buckets/B>; rel="up"` link to the object's own
//! bucket that Riak adds to every object response.
//!
//! Both URL forms are accepted on input (`/buckets/B/keys/K` and the legacy
//! `/riak/B/K`); output uses the form of the request's path. Names and tags
//! are percent-decoded on input and percent-encoded on output, as Riak does.
//! Like Riak, entries are split on commas, so a tag cannot contain a literal
//! comma (it can contain `%2C`).

use storage::Link;

use crate::error::ApiError;
use crate::routes::{bucket_url, decode_segment, encode_segment, object_url};

fn invalid() -> ApiError {
    ApiError::bad_request(
        "Invalid Link header. Links must be of the form </buckets/BUCKET/keys/KEY>; \
         riaktag=\"TAG\" (or </riak/BUCKET/KEY>; riaktag=\"TAG\")",
    )
}

/// Parses every `Link` header value of a write to `bucket`.
///
/// A `rel="up"` link to the object's own bucket is accepted and dropped
/// (clients echo it back); any other bucket link is refused, as Riak does.
pub fn parse<'a>(
    values: impl Iterator<Item = &'a str>,
    bucket: &str,
) -> Result<Vec<Link>, ApiError> {
    let mut links = Vec::new();
    for entry in values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let rest = entry.strip_prefix('<').ok_or_else(invalid)?;
        let (target, params) = rest.split_once('>').ok_or_else(invalid)?;
        let param = params
            .trim_start()
            .strip_prefix(';')
            .ok_or_else(invalid)?
            .trim();
        let (name, value) = param.split_once('=').ok_or_else(invalid)?;
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.is_empty() && !v.contains('"'))
            .ok_or_else(invalid)?;
        let segments: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        match (name.trim(), segments.as_slice()) {
            ("riaktag", ["buckets", b, "keys", k] | ["riak", b, k])
                if !b.is_empty() && !k.is_empty() =>
            {
                links.push(Link {
                    bucket: decode_segment(b, "link bucket")?,
                    key: Some(decode_segment(k, "link key")?),
                    tag: decode_segment(value, "link tag")?,
                });
            }
            ("rel", ["buckets", b] | ["riak", b]) => {
                if value != "up" || decode_segment(b, "link bucket")? != bucket {
                    return Err(invalid());
                }
            }
            _ => return Err(invalid()),
        }
    }
    Ok(links)
}

/// Formats the `Link` header of an object in `bucket`: the `up` link first,
/// then the object's links.
pub fn format(legacy: bool, bucket: &str, links: &[Link]) -> String {
    let mut out = format!("<{}>; rel=\"up\"", bucket_url(legacy, bucket));
    for link in links {
        let url = match &link.key {
            Some(key) => object_url(legacy, &link.bucket, key),
            None => bucket_url(legacy, &link.bucket),
        };
        out.push_str(&format!(
            ", <{url}>; riaktag=\"{}\"",
            encode_segment(&link.tag)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let links = parse(
            [
                "</buckets/people/keys/alice%20b>; riaktag=\"friend\", </riak/people/bob>; riaktag=\"boss\"",
                "</buckets/own>; rel=\"up\"",
            ]
            .into_iter(),
            "own",
        )
        .unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].key.as_deref(), Some("alice b"));
        assert_eq!(links[1].tag, "boss");
        let text = format(false, "own", &links);
        assert!(text.starts_with("</buckets/own>; rel=\"up\", </buckets/people/keys/alice%20b>"));
        let again = parse([text.as_str()].into_iter(), "own").unwrap();
        assert_eq!(again, links);
    }

    #[test]
    fn refuses_malformed_links() {
        for bad in [
            "<buckets/b/keys/k>",
            "</buckets/b/keys/k>; riaktag=friend",
            "</buckets/b/keys/k> riaktag=\"x\"",
            "</buckets/other>; rel=\"up\"",
            "</elsewhere/b/k>; riaktag=\"x\"",
            "</buckets/b/keys/k>; riaktag=\"\"",
        ] {
            assert_eq!(
                parse([bad].into_iter(), "own").unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
