//! `multipart/mixed` bodies: `http_api::multipart::decode` on any content
//! type and body never panics; and for parts built from the input (any
//! bytes as values, any header lines), `decode(encode(parts))` gives back
//! exactly the parts, less the header lines `encode` must leave out — so no
//! stored value can forge or hide a sibling in a `300` response.

#![no_main]

use http_api::multipart::{self, OwnedPart, Part};
use libfuzzer_sys::fuzz_target;
use starling_fuzz::frames;

fuzz_target!(|data: &[u8]| {
    let _ = multipart::decode("multipart/mixed; boundary=XyZ", data);
    if let Some((&split, rest)) = data.split_first() {
        let (content_type, body) = rest.split_at(usize::from(split).min(rest.len()));
        let _ = multipart::decode(&String::from_utf8_lossy(content_type), body);
    }

    // Even kinds start a part with the payload as its value; odd kinds add
    // a `name:value` header line to the current part.
    let mut parts: Vec<(Vec<(String, String)>, &[u8])> = Vec::new();
    for (kind, payload) in frames(data, 64) {
        if kind % 2 == 0 || parts.is_empty() {
            parts.push((Vec::new(), payload));
        } else {
            let text = String::from_utf8_lossy(payload);
            let (name, value) = text.split_once(':').unwrap_or((&text, ""));
            if let Some(last) = parts.last_mut() {
                last.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    let encoded: Vec<Part<'_>> = parts
        .iter()
        .map(|(headers, body)| Part {
            headers: headers.clone(),
            body,
        })
        .collect();
    let (boundary, body) = multipart::encode(&encoded);
    let decoded = multipart::decode(&format!("multipart/mixed; boundary={boundary}"), &body)
        .expect("what encode writes decodes");
    let expected: Vec<OwnedPart> = parts
        .iter()
        .map(|(headers, body)| OwnedPart {
            headers: headers
                .iter()
                .filter(|(n, v)| multipart::is_framable_header(n, v))
                .map(|(n, v)| (n.clone(), v.trim_matches([' ', '\t']).to_owned()))
                .collect(),
            body: body.to_vec(),
        })
        .collect();
    assert_eq!(decoded, expected);
});
