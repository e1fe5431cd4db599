//! Client security: authentication, grants, the plain-HTTP refusal, and
//! HTTPS.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_api::ServeConfig;
use http_api::auth::{Auth, Grant, User, hash_password};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::TestServer;

const PASSWORD: &str = "correct horse battery staple";

fn auth(allow_plain_http: bool) -> Arc<Auth> {
    let hash = hash_password(PASSWORD);
    let users = [
        ("reader", vec![Grant::Read]),
        ("writer", vec![Grant::Write]),
        ("admin", vec![Grant::Admin]),
        ("all", vec![Grant::Read, Grant::Write, Grant::Admin]),
    ]
    .into_iter()
    .map(|(name, grants)| User::new(name, &hash, grants).unwrap())
    .collect();
    Arc::new(Auth::new(users, allow_plain_http).unwrap())
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn unauthenticated_and_wrong_grant_requests_are_refused() {
    let server = TestServer::start_with(ServeConfig {
        auth: Some(auth(true)),
        ..ServeConfig::default()
    })
    .await;
    let key = "/buckets/b/keys/k";
    let text = ("content-type", "text/plain");
    let as_user = |user: &'static str| basic(user, PASSWORD);
    let (reader, writer, admin, all) = (
        as_user("reader"),
        as_user("writer"),
        as_user("admin"),
        as_user("all"),
    );
    let send = |method: &'static str, path: &'static str, authorization: Option<String>| {
        let server = &server;
        async move {
            let mut headers = vec![text];
            if let Some(a) = &authorization {
                headers.push(("authorization", a.as_str()));
            }
            server.request(method, path, &headers, "v").await
        }
    };

    // Health checks need nothing; everything else needs a user.
    assert_eq!(send("GET", "/ping", None).await.status, 200);
    for path in ["/", "/stats", "/metrics", key, "/buckets?buckets=true"] {
        let reply = send("GET", path, None).await;
        assert_eq!(reply.status, 401, "{path}");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic realm=")
        );
    }
    // Wrong password, unknown user, malformed header: 401, same message.
    let wrong = send("GET", key, Some(basic("reader", "guess"))).await;
    let unknown = send("GET", key, Some(basic("mallory", PASSWORD))).await;
    let malformed = send("GET", key, Some("Basic !!!".into())).await;
    assert_eq!(
        (wrong.status, unknown.status, malformed.status),
        (401, 401, 401)
    );
    assert_eq!(wrong.text(), unknown.text());
    assert_eq!(send("PUT", key, None).await.status, 401);
    assert_eq!(
        server
            .backend
            .puts_started
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // Grants: each user gets exactly what it holds.
    assert_eq!(send("PUT", key, Some(reader.clone())).await.status, 403);
    assert_eq!(send("DELETE", key, Some(reader.clone())).await.status, 403);
    assert_eq!(send("PUT", key, Some(writer.clone())).await.status, 204);
    assert_eq!(send("GET", key, Some(reader.clone())).await.status, 200);
    assert_eq!(send("GET", key, Some(writer.clone())).await.status, 403);
    let returnbody = "/buckets/b/keys/fresh?returnbody=true";
    let refused = send("PUT", returnbody, Some(writer.clone())).await;
    assert_eq!(
        refused.status, 403,
        "returnbody shows values: it needs read"
    );
    assert!(refused.text().contains("read"), "{}", refused.text());
    assert_eq!(send("PUT", returnbody, Some(all.clone())).await.status, 200);
    assert_eq!(
        send("GET", "/buckets/b/props", Some(reader.clone()))
            .await
            .status,
        200
    );
    for user in [&reader, &writer] {
        let reply = server
            .request(
                "PUT",
                "/buckets/b/props",
                &[
                    ("content-type", "application/json"),
                    ("authorization", user),
                ],
                r#"{"props":{"n_val":2}}"#,
            )
            .await;
        assert_eq!(reply.status, 403);
        assert_eq!(
            send("DELETE", "/buckets/b/props", Some(user.clone()))
                .await
                .status,
            403
        );
        assert_eq!(
            send("POST", "/admin/echo", Some(user.clone())).await.status,
            403
        );
    }
    let props = server
        .request(
            "PUT",
            "/buckets/b/props",
            &[
                ("content-type", "application/json"),
                ("authorization", &admin),
            ],
            r#"{"props":{"n_val":2}}"#,
        )
        .await;
    assert_eq!(props.status, 204);
    assert_eq!(
        send("POST", "/admin/echo", Some(admin.clone()))
            .await
            .status,
        200
    );
    assert_eq!(
        send("GET", key, Some(admin.clone())).await.status,
        403,
        "admin is not read"
    );
    for user in [&reader, &writer, &admin] {
        assert_eq!(send("GET", "/stats", Some(user.clone())).await.status, 200);
        assert_eq!(
            send("GET", "/metrics", Some(user.clone())).await.status,
            200
        );
    }
    let stats = send("GET", "/stats", Some(all)).await.json();
    assert!(stats["http_requests_unauthorized_total"].as_u64().unwrap() >= 15);
}

#[tokio::test]
async fn credentials_over_plain_http_are_refused_unless_allowed() {
    let server = TestServer::start_with(ServeConfig {
        auth: Some(auth(false)),
        ..ServeConfig::default()
    })
    .await;
    let authorization = basic("all", PASSWORD);
    let reply = server
        .request(
            "GET",
            "/buckets/b/keys/k",
            &[("authorization", &authorization)],
            "",
        )
        .await;
    assert_eq!(reply.status, 426);
    assert!(reply.text().contains("HTTPS"), "{}", reply.text());
    assert_eq!(server.get("/stats").await.status, 426);
    assert_eq!(server.get("/ping").await.status, 200);
}

/// A self-signed certificate for `localhost`: the server's configuration and
/// the client's trust in it.
fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

async fn https_request(
    server: &TestServer,
    client: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &'static str,
) -> u16 {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "text/plain");
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn https_serves_the_api_and_carries_credentials() {
    let (server_tls, client_tls) = tls_pair();
    let server = TestServer::start_with(ServeConfig {
        tls: Some(server_tls),
        auth: Some(auth(false)),
        ..ServeConfig::default()
    })
    .await;
    let all = basic("all", PASSWORD);
    let key = "/buckets/b/keys/k";
    assert_eq!(
        https_request(&server, &client_tls, "GET", "/ping", None, "").await,
        200
    );
    assert_eq!(
        https_request(&server, &client_tls, "GET", key, None, "").await,
        401
    );
    assert_eq!(
        https_request(&server, &client_tls, "PUT", key, Some(&all), "secret").await,
        204
    );
    assert_eq!(
        https_request(&server, &client_tls, "GET", key, Some(&all), "").await,
        200
    );
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let raw = server.raw(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!raw.starts_with("HTTP/1.1 200"), "{raw}");
}
