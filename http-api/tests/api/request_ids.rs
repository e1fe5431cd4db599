//! `X-Request-Id`: every answer names its request, the client's id when it
//! is sane and a new one otherwise, and the backend sees the same id.

use http_api::RequestId;

use crate::common::TestServer;

fn is_generated(id: Option<&str>) -> bool {
    id.is_some_and(|id| id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test]
async fn a_client_id_is_echoed_and_reaches_the_backend() {
    let server = TestServer::start().await;
    let headers = [
        ("content-type", "text/plain"),
        ("x-request-id", "test-req-42"),
    ];
    let put = server
        .request("PUT", "/buckets/b/keys/k", &headers, "v")
        .await;
    assert_eq!(put.status, 204, "{}", put.text());
    assert_eq!(put.header("x-request-id"), Some("test-req-42"));
    assert_eq!(
        *server.backend.last_request_id.lock().unwrap(),
        RequestId::parse(b"test-req-42")
    );
    let get = server
        .request(
            "GET",
            "/buckets/b/keys/k",
            &[("x-request-id", "read-1")],
            "",
        )
        .await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("x-request-id"), Some("read-1"));
    assert_eq!(
        *server.backend.last_request_id.lock().unwrap(),
        RequestId::parse(b"read-1")
    );
}

#[tokio::test]
async fn every_answer_has_an_id_and_insane_ones_are_replaced() {
    let server = TestServer::start().await;
    let ok = server.get("/ping").await;
    assert_eq!(ok.status, 200);
    let again = server.get("/ping").await;
    assert!(is_generated(ok.header("x-request-id")), "{:?}", ok.headers);
    assert!(is_generated(again.header("x-request-id")));
    assert_ne!(ok.header("x-request-id"), again.header("x-request-id"));
    // Errors, whoever makes them, carry one too.
    for (method, path, status) in [
        ("GET", "/nothing/here", 404),
        ("PATCH", "/buckets/b/keys/k", 405),
        ("GET", "/buckets/b/keys/k?r=9", 400),
        ("GET", "/buckets/b/keys/missing", 404),
    ] {
        let reply = server.request(method, path, &[], "").await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        assert!(
            is_generated(reply.header("x-request-id")),
            "{method} {path}: {:?}",
            reply.headers
        );
    }
    let too_long = "x".repeat(RequestId::LEN_MAX + 1);
    for insane in ["two words", too_long.as_str(), ""] {
        let reply = server
            .request("GET", "/ping", &[("x-request-id", insane)], "")
            .await;
        assert!(
            is_generated(reply.header("x-request-id")),
            "{insane:?}: {:?}",
            reply.headers
        );
    }
}
