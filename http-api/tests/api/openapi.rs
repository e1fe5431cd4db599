//! `openapi.yaml` against the server: every route is documented and every
//! documented path is served, and a scripted session's responses (status,
//! content type, JSON body) are all among what the document lists for the
//! operation.

use std::collections::BTreeSet;

use http_api::ServeConfig;
use serde_json::Value;

use crate::common::{Reply, TestServer};

fn document() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

const METHODS: &[&str] = &[
    "get", "head", "put", "post", "delete", "patch", "options", "trace",
];

#[test]
fn every_route_is_documented_and_every_documented_path_is_served() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (path.clone(), m.to_string()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = http_api::routes::ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(move |m| (r.template.to_owned(), m.to_ascii_lowercase()))
        })
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[test]
fn every_reference_resolves_and_every_path_parameter_is_declared() {
    let doc = document();
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    assert!(resolve(doc, r).is_some(), "dangling $ref {r}");
                }
                map.values().for_each(|c| walk(doc, c));
            }
            Value::Array(items) => items.iter().for_each(|c| walk(doc, c)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let mut declared = BTreeSet::new();
            for p in item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(item[*method]["parameters"].as_array().into_iter().flatten())
            {
                let p = deref(&doc, p);
                if p["in"] == "path" {
                    declared.insert(p["name"].as_str().unwrap().to_owned());
                }
            }
            let wanted: BTreeSet<String> = templated.iter().map(|s| s.to_string()).collect();
            assert_eq!(declared, wanted, "{method} {path}: path parameters");
        }
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => deref(doc, resolve(doc, r).unwrap()),
        None => v,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = deref(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| validate(doc, o, value, at).is_ok())
            .count();
        return if matching == 1 {
            Ok(())
        } else {
            Err(format!("{at}: {matching} oneOf branches match {value}"))
        };
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected {kind}, got {value}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} not in {options:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        return Err(format!("{at}: {n} below {min}"));
    }
    if let (Some(max), Some(n)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n > max
    {
        return Err(format!("{at}: {n} above {max}"));
    }
    if let Value::Object(map) = value {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(name.as_str().unwrap()) {
                return Err(format!("{at}: missing {name}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, member) in map {
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(doc, s, member, &format!("{at}.{name}"))?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: unexpected {name}")),
                (None, Some(extra @ Value::Object(_))) => {
                    validate(doc, extra, member, &format!("{at}.{name}"))?
                }
                (None, _) => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            return Err(format!("{at}: more than {max} items"));
        }
        for (i, item) in items.iter().enumerate() {
            validate(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn media_matches(documented: &str, actual: &str) -> bool {
    documented == "*/*"
        || documented == actual
        || documented
            .strip_suffix("/*")
            .is_some_and(|kind| actual.split('/').next() == Some(kind))
}

/// Checks one response against the operation the document lists for it.
fn check(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let found = match http_api::routes::find(path.split('?').next().unwrap()) {
        Ok(found) => found,
        Err(err) => {
            // Refused while routing (bad encoding, unknown bucket type):
            // every operation documents 400 and 404 as text.
            assert_eq!(reply.status, err.status.as_u16(), "{method} {path}");
            assert!(reply.content_type().starts_with("text/plain"));
            return;
        }
    };
    let Some(found) = found else {
        assert_eq!(reply.status, 404, "{method} {path}: unrouted paths are 404");
        return;
    };
    let what = format!("{method} {path} -> {}", reply.status);
    let operation = &doc["paths"][found.spec.template][method.to_ascii_lowercase()];
    if operation.is_null() {
        assert_eq!(reply.status, 405, "{what}: undocumented methods are 405");
        assert!(reply.header("allow").is_some());
        return;
    }
    let responses = &operation["responses"];
    let spec = responses
        .get(reply.status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{what}: status not documented ({})", reply.text()));
    let spec = deref(doc, spec);
    let Some(content_type) = reply.header("content-type") else {
        assert!(
            reply.body.is_empty(),
            "{what}: a body without a content type"
        );
        return;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    let content = spec["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no content documented, got {content_type}"));
    let (_, media) = content
        .iter()
        .find(|(documented, _)| media_matches(documented, &essence))
        .unwrap_or_else(|| {
            panic!(
                "{what}: content type {content_type} not among {:?}",
                content.keys()
            )
        });
    if essence == "application/json" && method != "HEAD" && !path.contains("=stream") {
        let body: Value =
            serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{what}: bad JSON {e}"));
        if let Err(err) = validate(doc, &media["schema"], &body, "$") {
            panic!("{what}: {err}\n{body}");
        }
    }
}

#[tokio::test]
async fn a_scripted_session_conforms_to_the_document() {
    let doc = document();
    let server = TestServer::start_with(ServeConfig {
        body_size_bytes_max: 4096,
        ..ServeConfig::default()
    })
    .await;
    let text = ("content-type", "text/plain");
    let json = ("content-type", "application/json");
    let mut statuses = BTreeSet::new();

    macro_rules! call {
        ($method:expr, $path:expr) => {
            call!($method, $path, &[], "")
        };
        ($method:expr, $path:expr, $headers:expr) => {
            call!($method, $path, $headers, "")
        };
        ($method:expr, $path:expr, $headers:expr, $body:expr) => {{
            let path: String = $path.into();
            let reply = server
                .request($method, &path, $headers, String::from($body))
                .await;
            check(&doc, $method, &path, &reply);
            statuses.insert(reply.status);
            reply
        }};
    }

    call!("GET", "/");
    call!("GET", "/", &[("accept", "application/json")]);
    call!("HEAD", "/ping");
    call!("GET", "/ping");
    call!("GET", "/stats");
    call!("HEAD", "/stats");

    let key = "/buckets/doc/keys/k";
    call!("PUT", key, &[text], "v1");
    let first = call!("GET", key);
    let stale = first.vclock();
    let etag = first.header("etag").unwrap().to_owned();
    call!("GET", key, &[("if-none-match", &etag)]);
    call!("HEAD", key);
    call!(
        "PUT",
        format!("{key}?returnbody=true"),
        &[text, ("x-riak-vclock", &stale)],
        "a"
    );
    call!(
        "PUT",
        format!("{key}?returnbody=true"),
        &[text, ("x-riak-vclock", &stale), ("accept", "text/plain")],
        "b"
    );
    let siblings = call!("GET", key);
    let vtag = siblings.text().lines().nth(1).unwrap().to_owned();
    call!("GET", key, &[("accept", "multipart/mixed")]);
    call!("GET", format!("{key}?vtag={vtag}"));
    call!("GET", format!("{key}?vtag=missing"));
    call!("POST", key, &[text], "c");
    call!("PUT", key, &[text, ("if-match", "\"nope\"")], "x");
    call!("PUT", key, &[text, ("x-riak-vclock", "garbage")], "x");
    call!("PUT", key, &[], "x");
    call!("PUT", key, &[("content-type", "bogus")], "x");
    call!("PUT", key, &[text], "x".repeat(5000));
    call!("GET", format!("{key}?r=7"));
    call!("GET", format!("{key}?timeout=0"));
    call!("PATCH", key);
    for _ in 0..=crate::common::SIBLINGS_MAX {
        call!("PUT", "/buckets/doc/keys/crowded", &[text], "x");
    }
    let context = call!("GET", key).vclock();
    call!("DELETE", key, &[("x-riak-vclock", &context)]);
    call!("GET", key);
    call!("DELETE", key);
    call!("DELETE", "/buckets/doc/keys/never");
    call!("POST", "/buckets/doc/keys", &[text], "new");
    call!("POST", "/buckets/doc/keys?returnbody=true", &[text], "new");
    call!("GET", "/buckets/doc/keys/k/preflist");
    call!("HEAD", "/buckets/doc/keys/k/preflist");

    call!("GET", "/buckets/doc/props");
    call!(
        "PUT",
        "/buckets/doc/props",
        &[json],
        r#"{"props":{"n_val":2,"r":1}}"#
    );
    call!(
        "PUT",
        "/buckets/doc/props",
        &[json],
        r#"{"props":{"n_val":"two"}}"#
    );
    call!("PUT", "/buckets/doc/props", &[text], r#"{"props":{}}"#);
    call!("GET", "/buckets/doc/props");
    call!("DELETE", "/buckets/doc/props");
    call!("POST", "/buckets/doc/props");

    call!("GET", "/buckets?buckets=true");
    call!("GET", "/buckets?buckets=stream");
    call!("GET", "/buckets");
    call!("GET", "/buckets/doc/keys?keys=true");
    call!("GET", "/buckets/doc/keys?keys=stream");
    call!("GET", "/buckets/doc/keys");

    call!("GET", "/types/default/buckets?buckets=true");
    call!("PUT", "/types/default/buckets/doc/keys/t", &[text], "typed");
    call!("GET", "/types/default/buckets/doc/keys/t");
    call!("GET", "/types/default/buckets/doc/props");
    call!("GET", "/types/default/buckets/doc/keys/t/preflist");
    call!("GET", "/types/other/buckets/doc/keys/t");

    call!("GET", "/riak/doc");
    call!("GET", "/riak/doc?keys=true");
    call!(
        "PUT",
        "/riak/doc",
        &[json],
        r#"{"props":{"allow_mult":true}}"#
    );
    call!("POST", "/riak/doc", &[text], "legacy");
    call!("PUT", "/riak/doc/l", &[text], "legacy");
    call!("GET", "/riak/doc/l");
    call!("DELETE", "/riak/doc/l");

    call!("GET", "/metrics");
    call!("POST", "/admin/echo", &[text], "x");
    call!("GET", "/admin/missing");
    call!("GET", "/no/such/path");
    call!("GET", "/buckets/doc/keys/%ZZ");

    let expected = [200, 201, 204, 300, 304, 400, 404, 405, 409, 412, 413, 415];
    for status in expected {
        assert!(
            statuses.contains(&status),
            "the script never produced {status}: {statuses:?}"
        );
    }
}
