//! Limits against overload and slow clients: every refusal is quick, and
//! the server keeps serving others.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_api::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestServer;

/// Polls `condition` every 10 ms until it holds; panics after `deadline`.
async fn wait_until(what: &str, deadline: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until the server closes the connection; returns what came.
async fn read_to_close(stream: &mut TcpStream, deadline: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close within {deadline:?}");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_503_at_once() {
    let server = TestServer::start_with(ServeConfig {
        requests_in_flight_max: 2,
        ..ServeConfig::default()
    })
    .await;
    *server.backend.put_delay.lock().unwrap() = Duration::from_secs(2);
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let addr = server.addr;
            let backend = server.backend.clone();
            tokio::spawn(async move {
                TestServer::attach(addr, backend)
                    .put_text(&format!("/buckets/b/keys/slow{i}"), None, "v")
                    .await
                    .status
            })
        })
        .collect();
    wait_until(
        "both slow puts to reach the backend",
        Duration::from_secs(5),
        async || server.backend.puts_started.load(Ordering::SeqCst) == 2,
    )
    .await;
    let started = Instant::now();
    let refused = server.get("/ping").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused quickly"
    );
    for task in slow {
        assert_eq!(task.await.unwrap(), 204);
    }
    assert_eq!(server.get("/ping").await.status, 200, "slots come back");
    assert_eq!(
        server.get("/stats").await.json()["http_requests_overloaded_total"],
        1
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_are_closed() {
    let server = TestServer::start_with(ServeConfig {
        connections_max: 3,
        ..ServeConfig::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The server takes them in order; the fourth finds no slot.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    extra
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut extra, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    drop(idle.pop());
    wait_until("a slot to free up", Duration::from_secs(5), async || {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut stream, Duration::from_secs(3))
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test]
async fn idle_connections_and_slow_heads_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(ServeConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    read_to_close(&mut idle, Duration::from_secs(5)).await;
    read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let server = TestServer::start_with(ServeConfig {
        body_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"PUT /buckets/b/keys/k HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
              Content-Length: 100\r\n\r\nonly this",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(server.backend.puts_started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bodies_beyond_the_memory_budget_get_503() {
    let server = TestServer::start_with(ServeConfig {
        body_size_bytes_max: 64 * 1024,
        body_buffer_bytes_max: 16 * 1024,
        ..ServeConfig::default()
    })
    .await;
    let big = "x".repeat(32 * 1024);
    let refused = server.put_text("/buckets/b/keys/big", None, &big).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    let small = "x".repeat(8 * 1024);
    assert_eq!(
        server
            .put_text("/buckets/b/keys/small", None, &small)
            .await
            .status,
        204
    );
    let too_large = server
        .put_text("/buckets/b/keys/huge", None, &"x".repeat(65 * 1024))
        .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(
        server.get("/stats").await.json()["http_body_buffer_bytes_in_use"],
        0
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let server = TestServer::start_with(ServeConfig {
        body_size_bytes_max: 64 * 1024 * 1024,
        write_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    // Larger than what loopback socket buffers hold.
    let value = "x".repeat(48 * 1024 * 1024);
    assert_eq!(
        server
            .put_text("/buckets/b/keys/big", None, &value)
            .await
            .status,
        204
    );
    drop(value);
    let mut reader = TcpStream::connect(server.addr).await.unwrap();
    reader
        .write_all(b"GET /buckets/b/keys/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes stall, and it must give up.
    wait_until(
        "the stalled connection to be closed",
        Duration::from_secs(10),
        async || server.get("/stats").await.json()["http_connections_open"] == 1,
    )
    .await;
    drop(reader);
}
