//! Objects, siblings, tombstones, metadata and conditional requests.

use crate::common::{TestServer, parse_multipart};

const KEY: &str = "/buckets/demo/keys/hello";

#[tokio::test]
async fn stale_writes_become_siblings_and_a_write_with_their_context_resolves_them() {
    let server = TestServer::start().await;
    assert_eq!(server.put_text(KEY, None, "v1").await.status, 204);
    let first = server.get(KEY).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "v1");
    let stale = first.vclock();

    for value in ["left", "right"] {
        assert_eq!(server.put_text(KEY, Some(&stale), value).await.status, 204);
    }

    // The text form lists both vtags.
    let listing = server.get(KEY).await;
    assert_eq!(listing.status, 300);
    assert!(listing.content_type().starts_with("text/plain"));
    let text = listing.text();
    let vtags: Vec<&str> = text
        .strip_prefix("Siblings:\n")
        .expect("Siblings: header")
        .lines()
        .collect();
    assert_eq!(vtags.len(), 2);
    assert!(listing.header("etag").is_some());

    // `?vtag=` fetches one sibling.
    let one = server.get(&format!("{KEY}?vtag={}", vtags[0])).await;
    assert_eq!(one.status, 200);
    assert!(["left", "right"].contains(&one.text().as_str()));
    assert_eq!(
        one.header("etag"),
        Some(format!("\"{}\"", vtags[0]).as_str())
    );
    assert_eq!(server.get(&format!("{KEY}?vtag=nope")).await.status, 404);

    // The multipart form carries every sibling with its metadata.
    let multi = server
        .request("GET", KEY, &[("accept", "multipart/mixed")], "")
        .await;
    assert_eq!(multi.status, 300);
    let parts = parse_multipart(multi.content_type(), &multi.text());
    let mut values: Vec<&str> = parts.iter().map(|p| p.body.as_str()).collect();
    values.sort();
    assert_eq!(values, ["left", "right"]);
    for part in &parts {
        assert_eq!(part.header("content-type"), Some("text/plain"));
        assert!(part.header("etag").is_some_and(|e| vtags.contains(&e)));
        assert!(part.header("last-modified").is_some());
        assert_eq!(part.header("link"), Some("</buckets/demo>; rel=\"up\""));
    }

    // A write with the 300's context leaves exactly one value.
    let context = multi.vclock();
    assert_eq!(
        server.put_text(KEY, Some(&context), "merged").await.status,
        204
    );
    let resolved = server.get(KEY).await;
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.text(), "merged");
}

#[tokio::test]
async fn a_delete_leaves_a_404_with_a_context_that_a_later_write_supersedes() {
    let server = TestServer::start().await;
    server.put_text(KEY, None, "v1").await;
    let context = server.get(KEY).await.vclock();
    let deleted = server
        .request("DELETE", KEY, &[("x-riak-vclock", &context)], "")
        .await;
    assert_eq!(deleted.status, 204);

    let gone = server.get(KEY).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.header("x-riak-deleted"), Some("true"));
    assert!(!gone.text().trim().is_empty());
    let tombstone_context = gone.vclock();

    assert_eq!(
        server
            .put_text(KEY, Some(&tombstone_context), "reborn")
            .await
            .status,
        204
    );
    let back = server
        .request("GET", KEY, &[("accept", "multipart/mixed")], "")
        .await;
    assert_eq!(back.status, 200, "one value and no tombstone sibling");
    assert_eq!(back.text(), "reborn");
    let object = server.backend.get_raw("demo", "hello");
    assert_eq!(
        object.siblings.len(),
        1,
        "the tombstone was superseded: {object:?}"
    );
}

#[tokio::test]
async fn delete_without_context_removes_what_it_read_and_404s_for_missing_keys() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .request("DELETE", "/buckets/demo/keys/missing", &[], "")
            .await
            .status,
        404
    );
    server.put_text(KEY, None, "a").await;
    server.put_text(KEY, None, "b").await;
    assert_eq!(server.get(KEY).await.status, 300);
    assert_eq!(server.request("DELETE", KEY, &[], "").await.status, 204);
    let gone = server.get(KEY).await;
    assert_eq!(
        gone.status,
        404,
        "both siblings were deleted: {}",
        gone.text()
    );
    assert_eq!(
        server.request("DELETE", KEY, &[], "").await.status,
        404,
        "already deleted"
    );
}

#[tokio::test]
async fn metadata_round_trips_through_headers() {
    let server = TestServer::start().await;
    let put = server
        .request(
            "PUT",
            "/buckets/meta/keys/k?returnbody=true",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("content-encoding", "identity"),
                ("x-riak-meta-Colour", "blue"),
                ("X-Riak-Meta-size", "XL"),
                ("link", "</buckets/people/keys/alice>; riaktag=\"owner\", </riak/people/bob>; riaktag=\"friend\""),
            ],
            "{\"a\":1}",
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(put.header("x-riak-vclock").is_some());
    let got = server.get("/buckets/meta/keys/k").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "{\"a\":1}");
    assert_eq!(got.content_type(), "application/json; charset=utf-8");
    assert_eq!(got.header("content-encoding"), Some("identity"));
    assert_eq!(got.header("x-riak-meta-colour"), Some("blue"));
    assert_eq!(got.header("x-riak-meta-size"), Some("XL"));
    let link = got.header("link").unwrap();
    assert!(link.starts_with("</buckets/meta>; rel=\"up\""), "{link}");
    assert!(
        link.contains("</buckets/people/keys/alice>; riaktag=\"owner\""),
        "{link}"
    );
    assert!(
        link.contains("</buckets/people/keys/bob>; riaktag=\"friend\""),
        "{link}"
    );
    let etag = got.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.len() > 2);
    assert!(httpdate::parse_http_date(got.header("last-modified").unwrap()).is_ok());
    // The backend got a content without a timestamp: the replica stamps it.
    let put_request = server.backend.last_put.lock().unwrap().clone().unwrap();
    assert_eq!(put_request.content.meta.last_modified_us, 0);
    assert_eq!(put_request.content.meta.content_type, "application/json");
    // Legacy paths show links in the legacy form.
    let legacy = server.get("/riak/meta/k").await;
    assert_eq!(legacy.status, 200);
    assert!(
        legacy
            .header("link")
            .unwrap()
            .contains("</riak/people/alice>; riaktag=\"owner\"")
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let server = TestServer::start().await;
    server.put_text(KEY, None, "12345").await;
    let head = server.request("HEAD", KEY, &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.header("x-riak-vclock").is_some());
}

#[tokio::test]
async fn post_to_a_bucket_chooses_the_key() {
    let server = TestServer::start().await;
    let created = server
        .request(
            "POST",
            "/buckets/auto/keys",
            &[("content-type", "text/plain")],
            "fresh",
        )
        .await;
    assert_eq!(created.status, 201);
    let location = created.header("location").unwrap().to_owned();
    assert!(location.starts_with("/buckets/auto/keys/"), "{location}");
    assert_eq!(server.get(&location).await.text(), "fresh");
    let with_body = server
        .request(
            "POST",
            "/types/default/buckets/auto/keys?returnbody=true",
            &[("content-type", "text/plain")],
            "x",
        )
        .await;
    assert_eq!(with_body.status, 201);
    assert_eq!(with_body.text(), "x");
    assert!(with_body.header("x-riak-vclock").is_some());
    let legacy = server
        .request("POST", "/riak/auto", &[("content-type", "text/plain")], "y")
        .await;
    assert_eq!(legacy.status, 201);
    assert!(
        legacy
            .header("location")
            .unwrap()
            .starts_with("/riak/auto/")
    );
}

#[tokio::test]
async fn post_to_a_key_is_a_put_and_returnbody_shows_siblings() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .request("POST", KEY, &[("content-type", "text/plain")], "a")
            .await
            .status,
        204
    );
    let reply = server
        .request(
            "PUT",
            &format!("{KEY}?returnbody=true"),
            &[("content-type", "text/plain")],
            "b",
        )
        .await;
    // webmachine offers multipart first for a write's returnbody.
    assert_eq!(reply.status, 300);
    assert!(reply.content_type().starts_with("multipart/mixed"));
    assert_eq!(
        parse_multipart(reply.content_type(), &reply.text()).len(),
        2
    );
    let plain = server
        .request(
            "PUT",
            &format!("{KEY}?returnbody=true"),
            &[("content-type", "text/plain"), ("accept", "text/plain")],
            "c",
        )
        .await;
    assert_eq!(plain.status, 300);
    assert!(plain.text().starts_with("Siblings:\n"));
}

#[tokio::test]
async fn conditional_reads_answer_304() {
    let server = TestServer::start().await;
    server.put_text(KEY, None, "v").await;
    let got = server.get(KEY).await;
    let etag = got.header("etag").unwrap().to_owned();
    let modified = got.header("last-modified").unwrap().to_owned();
    assert_eq!(
        server
            .request("GET", KEY, &[("if-none-match", &etag)], "")
            .await
            .status,
        304
    );
    assert_eq!(
        server
            .request("GET", KEY, &[("if-none-match", "\"other\"")], "")
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .request("GET", KEY, &[("if-modified-since", &modified)], "")
            .await
            .status,
        304
    );
    assert_eq!(
        server
            .request(
                "GET",
                KEY,
                &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                ""
            )
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn conditional_writes_answer_412_when_they_fail() {
    let server = TestServer::start().await;
    let create_only = [("content-type", "text/plain"), ("if-none-match", "*")];
    assert_eq!(
        server
            .request("PUT", KEY, &create_only, "first")
            .await
            .status,
        204
    );
    let again = server.request("PUT", KEY, &create_only, "second").await;
    assert_eq!(again.status, 412);
    assert!(!again.text().trim().is_empty());

    let etag = server.get(KEY).await.header("etag").unwrap().to_owned();
    let stale = server
        .request(
            "PUT",
            KEY,
            &[("content-type", "text/plain"), ("if-match", "\"not-it\"")],
            "x",
        )
        .await;
    assert_eq!(stale.status, 412);
    // If-Match without a context acts on what it checked: no sibling.
    let matched = server
        .request(
            "PUT",
            KEY,
            &[("content-type", "text/plain"), ("if-match", &etag)],
            "third",
        )
        .await;
    assert_eq!(matched.status, 204);
    let now = server.get(KEY).await;
    assert_eq!((now.status, now.text().as_str()), (200, "third"));

    let past = "Thu, 01 Jan 1970 00:00:00 GMT";
    let unmodified = server
        .request(
            "PUT",
            KEY,
            &[
                ("content-type", "text/plain"),
                ("if-unmodified-since", past),
            ],
            "x",
        )
        .await;
    assert_eq!(unmodified.status, 412);
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let modified = server
        .request(
            "PUT",
            KEY,
            &[
                ("content-type", "text/plain"),
                ("if-modified-since", future),
            ],
            "x",
        )
        .await;
    assert_eq!(modified.status, 412);
    let delete = server
        .request("DELETE", KEY, &[("if-match", "\"not-it\"")], "")
        .await;
    assert_eq!(delete.status, 412);
    assert_eq!(
        server
            .request(
                "PUT",
                "/buckets/demo/keys/none",
                &[("content-type", "text/plain"), ("if-match", "*")],
                "x"
            )
            .await
            .status,
        412
    );
}

#[tokio::test]
async fn quorum_parameters_reach_the_backend() {
    let server = TestServer::start().await;
    server.put_text(KEY, None, "v").await;
    let got = server
        .get(&format!(
            "{KEY}?r=1&pr=one&notfound_ok=false&basic_quorum=true&timeout=2500"
        ))
        .await;
    assert_eq!(got.status, 200);
    let req = server.backend.last_get.lock().unwrap().clone().unwrap();
    assert_eq!(req.quorums.r, Some(storage::Quorum::Count(1)));
    assert_eq!(req.quorums.pr, Some(storage::Quorum::One));
    assert_eq!(req.quorums.notfound_ok, Some(false));
    assert_eq!(req.quorums.basic_quorum, Some(true));
    assert_eq!(req.timeout, Some(std::time::Duration::from_millis(2500)));
    server
        .put_text(&format!("{KEY}?w=all&dw=2&pw=default"), None, "v")
        .await;
    let req = server.backend.last_put.lock().unwrap().clone().unwrap();
    assert_eq!(req.quorums.w, Some(storage::Quorum::All));
    assert_eq!(req.quorums.dw, Some(storage::Quorum::Count(2)));
    assert_eq!(req.quorums.pw, None);
}

#[tokio::test]
async fn percent_encoded_names_are_decoded_and_reencoded() {
    let server = TestServer::start().await;
    let path = "/buckets/my%20bucket/keys/a%2Fb%2Bc";
    assert_eq!(server.put_text(path, None, "odd").await.status, 204);
    assert_eq!(
        server
            .get("/types/default/buckets/my+bucket/keys/a%2Fb%2Bc")
            .await
            .text(),
        "odd"
    );
    assert_eq!(
        server.get("/riak/my%20bucket/a%2Fb%2Bc").await.text(),
        "odd"
    );
    let object = server.backend.get_raw("my bucket", "a/b+c");
    assert_eq!(object.siblings.len(), 1);
}

#[tokio::test]
async fn too_many_siblings_is_409_and_resolvable() {
    let server = TestServer::start().await;
    let mut status = 204;
    for _ in 0..=crate::common::SIBLINGS_MAX {
        status = server.put_text(KEY, None, "x").await.status;
    }
    assert_eq!(status, 409);
    let context = server.get(KEY).await.vclock();
    assert_eq!(
        server
            .put_text(KEY, Some(&context), "resolved")
            .await
            .status,
        204
    );
    assert_eq!(server.get(KEY).await.status, 200);
}
