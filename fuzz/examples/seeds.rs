//! Writes the seed corpus (`fuzz/seeds/<target>/`): genuine encodings of
//! every message kind, produced by the real encoders, so the fuzzers start
//! from inputs that pass the first checks. Run from `fuzz/`:
//! `cargo run --example seeds`. The output is deterministic (fixed RNG
//! seeds and clocks) apart from the multipart boundary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use http_api::RequestId;
use membership::{Output, Swim, Time};
use node::rpc::{self, Apply, Envelope, ErrorKind, Request, Response};
use rand::rngs::StdRng;
use starling_fuzz::{CLUSTER_SECRET, SWIM_STEP, frame, swim_addr, swim_node};
use storage::{ActorId, BucketProps, Content, ContextKey, Dot, Link, Metadata, Object, context};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn object(siblings: u64, deleted: bool) -> Object {
    let mut object = Object::new();
    let base = object.version.clone();
    for i in 1..=siblings {
        let content = if deleted {
            Content::tombstone(1_700_000_000_000_000 + i)
        } else {
            Content {
                value: format!("value {i}").into_bytes(),
                meta: Metadata {
                    content_type: "text/plain".into(),
                    charset: Some("utf-8".into()),
                    content_encoding: (i == 2).then(|| "gzip".into()),
                    user_meta: vec![("colour".into(), "blue".into())],
                    links: vec![Link {
                        bucket: "people".into(),
                        key: Some("bob".into()),
                        tag: "friend".into(),
                    }],
                    last_modified_us: 1_700_000_000_000_000 + i,
                },
                deleted: false,
            }
        };
        let dot = Dot {
            actor: ActorId {
                node: 0x51 + i % 2,
                epoch: 7,
            },
            counter: i,
        };
        object.update(&base, dot, content).expect("fresh dots");
    }
    object
}

/// A stored record: format 1, the deleted flag, then postcard (see
/// `storage::layout`). Checked with the store's own decoder.
fn record(object: &Object) -> Vec<u8> {
    let mut bytes = vec![1, u8::from(object.is_deleted())];
    bytes.extend(postcard::to_stdvec(object).expect("encode"));
    let decoded = storage::layout::decode_object("seed", &bytes).expect("a valid record");
    assert_eq!(&decoded, object);
    bytes
}

fn stored_object_seeds() {
    write("stored_object", "one-sibling", &record(&object(1, false)));
    write(
        "stored_object",
        "three-siblings",
        &record(&object(3, false)),
    );
    write("stored_object", "tombstone", &record(&object(1, true)));
    let mut props = vec![1];
    props.extend(postcard::to_stdvec(&BucketProps::default()).expect("encode"));
    storage::layout::decode_props(b"bucket", &props).expect("valid props");
    write("stored_object", "props", &props);
}

fn context_seeds() {
    let key = ContextKey::derive(CLUSTER_SECRET);
    let version = object(3, false).version;
    let sealed = context::encode(&key, b"b", b"k", &version);
    write("context", "genuine", sealed.as_bytes());
    write(
        "context",
        "body",
        &postcard::to_stdvec(&version).expect("encode"),
    );
    write(
        "context",
        "empty-body",
        &postcard::to_stdvec(&Object::new().version).expect("encode"),
    );
}

fn rpc_seeds() {
    let apply = Apply {
        resolve_by_time: false,
        sync: true,
    };
    let requests = [
        (
            "get",
            Request::Get {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
        ),
        (
            "put",
            Request::Put {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                context: object(1, false).version,
                content: object(1, false).siblings[0].content.clone(),
                apply,
            },
        ),
        (
            "merge",
            Request::Merge {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                object: object(2, false),
                apply,
            },
        ),
        (
            "hint",
            Request::Hint {
                owner: 0xfeed,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                object: object(1, true),
                apply,
            },
        ),
        (
            "set-props",
            Request::SetProps {
                bucket: b"b".to_vec(),
                props: Some(BucketProps::default()),
            },
        ),
        (
            "list",
            Request::List {
                bucket: Some(b"b".to_vec()),
            },
        ),
        (
            "batch",
            Request::Batch(vec![
                Request::Get {
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
                Request::Merge {
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                    object: object(1, false),
                    apply,
                },
            ]),
        ),
    ];
    for (i, (name, request)) in requests.into_iter().enumerate() {
        // One id per request of a batch (the second serves no client
        // request), else one.
        let id = RequestId::parse(format!("seed-{i}").as_bytes());
        let request_ids = match &request {
            Request::Batch(requests) => {
                (0..requests.len()).map(|j| id.filter(|_| j == 0)).collect()
            }
            _ => vec![id],
        };
        let envelope = Envelope {
            format: rpc::RPC_FORMAT,
            request_ids,
            budget_ms: 5_000,
            request,
        };
        write(
            "rpc_message",
            &format!("request-{name}"),
            &rpc::encode(&envelope),
        );
    }
    let responses = [
        ("object", Response::Object(Some(object(2, false)))),
        ("missing", Response::Object(None)),
        (
            "written",
            Response::Written {
                object: object(1, false),
                durable: true,
            },
        ),
        ("applied", Response::Applied { durable: true }),
        ("names", Response::Names(vec![b"a".to_vec(), b"b".to_vec()])),
        ("done", Response::Done),
        (
            "error",
            Response::Error {
                kind: ErrorKind::Unavailable,
                message: "disk full".into(),
            },
        ),
    ];
    for (name, response) in responses {
        write(
            "rpc_message",
            &format!("response-{name}"),
            &rpc::encode(&response),
        );
    }
}

/// Runs nodes 1-3 for a few virtual seconds, delivering everything, and
/// returns what reached node 1 as frames for the `swim_message` target.
fn swim_seeds() {
    let mut nodes: BTreeMap<SocketAddr, Swim<StdRng>> =
        (1..=3).map(|n| (swim_addr(n), swim_node(n))).collect();
    let target = swim_addr(1);
    for n in [2, 3] {
        if let Some(node) = nodes.get_mut(&swim_addr(n)) {
            node.join(Time::ZERO, &[target]);
        }
    }
    let mut timers: Vec<(Time, SocketAddr, membership::Timer)> = Vec::new();
    let mut captured: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut now = Time::ZERO;
    for _ in 0..40 {
        // Deliver until quiet, then advance time.
        for _ in 0..1000 {
            let mut pending = Vec::new();
            for (&addr, node) in nodes.iter_mut() {
                while let Some(out) = node.poll_output() {
                    pending.push((addr, out));
                }
            }
            if pending.is_empty() {
                break;
            }
            for (from, out) in pending {
                match out {
                    Output::Datagram { addr, bytes, .. } => {
                        if addr == target {
                            captured.push((0, bytes.clone()));
                        }
                        if let Some(node) = nodes.get_mut(&addr) {
                            let _ = node.handle_datagram(now, from, &bytes);
                        }
                    }
                    Output::PushPull { addr, bytes, .. } => {
                        if addr == target {
                            captured.push((1, bytes.clone()));
                        }
                        let reply = nodes
                            .get_mut(&addr)
                            .and_then(|node| node.handle_stream_request(now, from, &bytes).ok());
                        if let Some(reply) = reply {
                            if from == target {
                                captured.push((2, reply.clone()));
                            }
                            if let Some(node) = nodes.get_mut(&from) {
                                let _ = node.handle_stream_reply(now, addr, &reply);
                            }
                        }
                    }
                    Output::Timer { at, timer } => timers.push((at, from, timer)),
                    Output::Event(_) => {}
                }
            }
        }
        now = now + SWIM_STEP;
        let (due, later): (Vec<_>, Vec<_>) = timers.drain(..).partition(|(at, ..)| *at <= now);
        timers = later;
        for (_, addr, timer) in due {
            if let Some(node) = nodes.get_mut(&addr) {
                node.handle_timer(now, timer);
            }
        }
    }
    // One seed per distinct message kind and first byte pattern, plus one
    // session replaying everything with time passing in between.
    let mut seen = std::collections::BTreeSet::new();
    let mut session = Vec::new();
    for (i, (kind, bytes)) in captured.iter().enumerate() {
        let signature = (*kind, bytes.get(..20.min(bytes.len())).map(<[u8]>::to_vec));
        if seen.insert(signature) && seen.len() <= 24 {
            write(
                "swim_message",
                &format!("message-{i:03}"),
                &frame(*kind, bytes),
            );
        }
        if session.len() < 16 * 1024 {
            session.extend(frame(*kind, bytes));
            session.extend(frame(3, &[4]));
        }
    }
    write("swim_message", "session", &session);
    println!("swim: {} messages captured for node 1", captured.len());
}

fn multipart_seeds() {
    let parts = [
        http_api::multipart::Part {
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("Etag".into(), "abc".into()),
            ],
            body: b"one",
        },
        http_api::multipart::Part {
            headers: vec![("X-Riak-Meta-colour".into(), "blue".into())],
            body: b"two\r\n",
        },
    ];
    let (boundary, body) = http_api::multipart::encode(&parts);
    let fixed = String::from_utf8_lossy(&body).replace(&boundary, "XyZ");
    write("multipart", "riak-siblings", fixed.as_bytes());
    let mut framed = frame(0, b"first value");
    framed.extend(frame(1, b"Content-Type: text/plain"));
    framed.extend(frame(0, b"second\r\n--value"));
    framed.extend(frame(1, b"Etag:xyz"));
    write("multipart", "framed-parts", &framed);
}

fn query_seeds() {
    for (name, query) in [
        ("quorums", "r=2&w=quorum&dw=default&pr=one&pw=ALL&rw=3"),
        (
            "flags",
            "notfound_ok=false&basic_quorum=true&returnbody=true&timeout=1500",
        ),
        ("listing", "keys=stream&buckets=true&props=false"),
        ("encoded", "vtag=%41b%2Bc&r=%31&x+y=a+b"),
        ("bad", "r=%G1&timeout=-5&w=most"),
    ] {
        write("query_string", name, query.as_bytes());
    }
}

fn request_head_seeds() {
    let mut head = frame(0, b"/buckets/people/keys/alice%20b");
    head.extend(frame(
        1,
        b"</buckets/people/keys/bob>; riaktag=\"friend\", </buckets/people>; rel=\"up\"",
    ));
    head.extend(frame(2, b"multipart/mixed, */*;q=0.5"));
    head.extend(frame(3, b"text/plain; charset=UTF-8; format=flowed"));
    head.extend(frame(4, b"\"abc\", W/\"def\""));
    head.extend(frame(6, b"Sun, 06 Nov 1994 08:49:37 GMT"));
    head.extend(frame(8, b"gzip"));
    head.extend(frame(9, b"colour=blue"));
    write("request_head", "put", &head);
    let mut legacy = frame(0, b"/riak/b/k");
    legacy.extend(frame(1, b"</riak/people/bob>; riaktag=\"boss\""));
    legacy.extend(frame(5, b"*"));
    legacy.extend(frame(7, b"Sun, 06 Nov 1994 08:49:37 GMT"));
    write("request_head", "legacy", &legacy);
    write(
        "request_head",
        "typed",
        &frame(0, b"/types/default/buckets/b/keys/k/preflist"),
    );
}

fn main() {
    context_seeds();
    stored_object_seeds();
    rpc_seeds();
    swim_seeds();
    multipart_seeds();
    query_seeds();
    request_head_seeds();
}
