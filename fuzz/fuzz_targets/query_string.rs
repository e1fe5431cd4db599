//! Query strings: `http_api::query::Query::parse` and every accessor the
//! handlers use (quorums, booleans, `timeout`, `returnbody`, listing modes).
//! Any string is either parsed or refused with a `400`; never a panic, never
//! another status; a `timeout` that parses is within its bounds.

#![no_main]

use std::time::Duration;

use http_api::listing;
use http_api::query::{Query, TIMEOUT_MS_MAX};
use libfuzzer_sys::fuzz_target;

fn check(raw: &str) {
    let query = match Query::parse(Some(raw)) {
        Ok(query) => query,
        Err(err) => {
            assert_eq!(err.status, 400);
            return;
        }
    };
    for name in ["r", "pr", "w", "dw", "pw", "rw"] {
        if let Err(err) = query.quorum(name) {
            assert_eq!(err.status, 400);
        }
    }
    for name in ["notfound_ok", "basic_quorum"] {
        if let Err(err) = query.boolean(name) {
            assert_eq!(err.status, 400);
        }
    }
    match query.timeout() {
        Ok(Some(timeout)) => {
            assert!(timeout >= Duration::from_millis(1));
            assert!(timeout <= Duration::from_millis(TIMEOUT_MS_MAX));
        }
        Ok(None) => {}
        Err(err) => assert_eq!(err.status, 400),
    }
    let _ = query.is_true("returnbody");
    let _ = query.value("vtag");
    for name in ["keys", "buckets"] {
        if let Err(err) = listing::mode(&query, name) {
            assert_eq!(err.status, 400);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    check(&raw);
    // What hyper hands over: the query of a URI that parsed.
    if let Ok(uri) = format!("/buckets/b/keys/k?{raw}").parse::<http::Uri>()
        && let Some(query) = uri.query()
    {
        check(query);
    }
});
