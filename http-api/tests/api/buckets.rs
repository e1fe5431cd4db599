//! Bucket properties, listings, preflists, discovery, admin pass-through
//! and graceful shutdown.

use std::time::Duration;

use http_api::ServeConfig;

use crate::common::TestServer;

#[tokio::test]
async fn props_are_read_merged_validated_and_reset() {
    let server = TestServer::start().await;
    let props = server.get("/buckets/p/props").await;
    assert_eq!(props.status, 200);
    assert_eq!(props.content_type(), "application/json");
    let v = props.json();
    assert_eq!(v["props"]["n_val"], 3);
    assert_eq!(v["props"]["name"], "p");
    assert_eq!(v["props"]["allow_mult"], true);
    assert_eq!(v["props"]["r"], "quorum");

    let json = [("content-type", "application/json")];
    let set = server
        .request(
            "PUT",
            "/buckets/p/props",
            &json,
            r#"{"props":{"n_val":2,"w":"one","dw":1}}"#,
        )
        .await;
    assert_eq!(set.status, 204, "{}", set.text());
    let v = server.get("/types/default/buckets/p/props").await.json();
    assert_eq!(
        (
            v["props"]["n_val"].clone(),
            v["props"]["w"].clone(),
            v["props"]["dw"].clone()
        ),
        (2.into(), "one".into(), 1.into())
    );
    assert_eq!(
        v["props"]["r"], "quorum",
        "untouched fields keep their value"
    );
    // n_val now bounds quorum parameters.
    assert_eq!(server.get("/buckets/p/keys/k?r=3").await.status, 400);
    // Legacy bucket resource shows the same props.
    assert_eq!(server.get("/riak/p").await.json()["props"]["n_val"], 2);

    assert_eq!(
        server
            .request("DELETE", "/buckets/p/props", &[], "")
            .await
            .status,
        204
    );
    assert_eq!(
        server.get("/buckets/p/props").await.json()["props"]["n_val"],
        3
    );
}

#[tokio::test]
async fn allow_mult_false_keeps_the_latest_write() {
    let server = TestServer::start().await;
    let json = [("content-type", "application/json")];
    server
        .request(
            "PUT",
            "/buckets/lww/props",
            &json,
            r#"{"props":{"allow_mult":false}}"#,
        )
        .await;
    server.put_text("/buckets/lww/keys/k", None, "a").await;
    server.put_text("/buckets/lww/keys/k", None, "b").await;
    let got = server.get("/buckets/lww/keys/k").await;
    assert_eq!((got.status, got.text().as_str()), (200, "b"));
}

#[tokio::test]
async fn buckets_and_keys_are_listed_whole_or_streamed() {
    let server = TestServer::start().await;
    for (bucket, key) in [
        ("b1", "k1"),
        ("b1", "k2"),
        ("b1", "k3"),
        ("b2", "k1"),
        ("b3", "k1"),
    ] {
        server
            .put_text(&format!("/buckets/{bucket}/keys/{key}"), None, "v")
            .await;
    }
    let buckets = server.get("/buckets?buckets=true").await;
    assert_eq!(
        buckets.json(),
        serde_json::json!({"buckets": ["b1", "b2", "b3"]})
    );
    let keys = server.get("/buckets/b1/keys?keys=true").await;
    assert_eq!(keys.json(), serde_json::json!({"keys": ["k1", "k2", "k3"]}));

    let streamed = server.get("/buckets/b1/keys?keys=stream").await;
    assert_eq!(streamed.status, 200);
    let mut all = Vec::new();
    for doc in serde_json::Deserializer::from_slice(&streamed.body).into_iter::<serde_json::Value>()
    {
        for k in doc.unwrap()["keys"].as_array().unwrap() {
            all.push(k.as_str().unwrap().to_owned());
        }
    }
    assert_eq!(all, ["k1", "k2", "k3"]);
    let streamed = server.get("/types/default/buckets?buckets=stream").await;
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&streamed.body)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(docs.len(), 2, "the backend sends chunks of two");
    let legacy = server.get("/riak/b1?keys=true&props=false").await.json();
    assert_eq!(legacy, serde_json::json!({"keys": ["k1", "k2", "k3"]}));
}

#[tokio::test]
async fn an_empty_streamed_listing_is_one_empty_document() {
    let server = TestServer::start().await;
    let keys = server.get("/buckets/nothing/keys?keys=stream").await;
    assert_eq!(keys.status, 200);
    assert_eq!(keys.json(), serde_json::json!({"keys": []}));
    let buckets = server.get("/buckets?buckets=stream").await;
    assert_eq!(buckets.json(), serde_json::json!({"buckets": []}));
}

#[tokio::test]
async fn preflist_stats_root_and_ping() {
    let server = TestServer::start().await;
    let preflist = server.get("/buckets/b/keys/k/preflist").await.json();
    assert_eq!(preflist["preflist"].as_array().unwrap().len(), 3);
    assert_eq!(
        preflist["preflist"][0],
        serde_json::json!({"partition": 0, "node": "test0@127.0.0.1", "primary": true})
    );

    let stats = server.get("/stats").await.json();
    assert_eq!(stats["riak_kv_version"], http_api::RIAK_API_LEVEL);
    assert_eq!(
        stats["nodename"], "test@127.0.0.1",
        "the backend's fields win"
    );
    assert!(stats["http_requests_total"].as_u64().unwrap() >= 1);

    let root = server
        .request("GET", "/", &[("accept", "application/json")], "")
        .await
        .json();
    assert_eq!(root["riak_kv_wm_buckets"], "/buckets");
    assert_eq!(root["riak_kv_wm_ping"], "/ping");
    assert_eq!(root["riak_kv_wm_stats"], "/stats");
    let html = server
        .request("GET", "/", &[("accept", "text/html")], "")
        .await;
    assert!(html.content_type().starts_with("text/html"));
    assert!(
        html.text()
            .contains("<a href=\"/buckets\">riak_kv_wm_buckets</a>")
    );
    let ping = server.get("/ping").await;
    assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
}

#[tokio::test]
async fn admin_and_metrics_pass_through() {
    let server = TestServer::start().await;
    let echo = server
        .request(
            "POST",
            "/admin/echo?x=1",
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(echo.status, 200);
    assert_eq!(
        echo.json(),
        serde_json::json!({"method": "POST", "query": "x=1", "body": "hello"})
    );
    let metrics = server.get("/metrics").await;
    assert!(metrics.text().contains("starling_up 1"));
    assert_eq!(server.get("/admin/nothing/deeper").await.status, 404);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut server = TestServer::start_with(ServeConfig {
        drain_timeout: Duration::from_secs(5),
        ..ServeConfig::default()
    })
    .await;
    *server.backend.put_delay.lock().unwrap() = Duration::from_millis(300);
    let addr = server.addr;
    let slow = {
        let server = TestServer::attach(addr, server.backend.clone());
        tokio::spawn(async move { server.put_text("/buckets/s/keys/k", None, "v").await.status })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;
    assert_eq!(slow.await.unwrap(), 204, "the in-flight write finished");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
