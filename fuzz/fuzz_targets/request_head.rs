//! The rest of a request head that `http-api` parses: the path
//! (`routes::find`, percent-decoding), `Link`, `Accept`, `Content-Type`,
//! `X-Riak-Meta-*`, `Content-Encoding` and the conditional headers. Input
//! frames (see `starling_fuzz::frames`) each set one part of the head. Bad
//! input is a `4xx` with a message, never a panic; names round-trip through
//! the URL encoding.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use http_api::conditional::{self, Validators};
use http_api::object::{self, Target};
use http_api::{link, response, routes};
use libfuzzer_sys::fuzz_target;
use starling_fuzz::frames;

fn is_client_error(err: &http_api::ApiError) -> bool {
    err.status.is_client_error() && !err.message.is_empty()
}

fuzz_target!(|data: &[u8]| {
    let mut path = String::from("/buckets/b/keys/k");
    let mut headers = HeaderMap::new();
    for (kind, payload) in frames(data, 16) {
        let name = match kind % 10 {
            0 => {
                path = String::from_utf8_lossy(payload).into_owned();
                continue;
            }
            1 => "link",
            2 => "accept",
            3 => "content-type",
            4 => "if-match",
            5 => "if-none-match",
            6 => "if-modified-since",
            7 => "if-unmodified-since",
            8 => "content-encoding",
            _ => {
                // A user metadata header: the name from the first bytes.
                let split = payload.iter().position(|&b| b == b'=').unwrap_or(payload.len());
                let name = format!("x-riak-meta-{}", String::from_utf8_lossy(&payload[..split]));
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(payload.get(split + 1..).unwrap_or_default()),
                ) {
                    headers.append(name, value);
                }
                continue;
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(payload) {
            headers.append(HeaderName::from_static(name), value);
        }
    }

    let (bucket, key) = match routes::find(&path) {
        Ok(Some(found)) => (
            found.bucket.unwrap_or_else(|| "b".into()),
            found.key.unwrap_or_else(|| "k".into()),
        ),
        Ok(None) => ("b".into(), "k".into()),
        Err(err) => {
            assert!(is_client_error(&err), "{err}");
            ("b".into(), "k".into())
        }
    };
    for name in [&bucket, &key] {
        let encoded = routes::encode_segment(name);
        assert_eq!(routes::decode_segment(&encoded, "name").ok().as_ref(), Some(name));
    }
    let target = Target {
        bucket,
        key,
        legacy: data.len() % 2 == 1,
    };
    match object::parse_metadata(&target, &headers) {
        Ok(meta) => {
            // What was parsed renders back as a Link header that parses again.
            let rendered = link::format(target.legacy, &target.bucket, &meta.links);
            let again = link::parse([rendered.as_str()].into_iter(), &target.bucket)
                .expect("a rendered Link header parses");
            assert_eq!(again, meta.links);
        }
        Err(err) => assert!(is_client_error(&err), "{err}"),
    }
    let accept = headers.get("accept").and_then(|v| v.to_str().ok());
    let offered = ["text/plain", "multipart/mixed"];
    if let Some(chosen) = response::negotiate(accept, &offered) {
        assert!(offered.contains(&chosen));
    }
    let current = Validators {
        etag: "abc".into(),
        last_modified_us: 1_700_000_000_000_000,
    };
    let _ = conditional::not_modified(&headers, &current);
    for validators in [Some(&current), None] {
        if let Err(err) = conditional::check_write(&headers, validators) {
            assert_eq!(err.status, 412);
        }
    }
});
