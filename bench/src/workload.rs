//! What to send: operation choice, key choice and the HTTP requests.
//!
//! Requests are built the same way whether they go to a Starling node or to
//! the ceiling server, so the generator does the same work in both runs and
//! the ratio of the two measures the server, not the client.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

use crate::plan::{KeyDist, Load, Workload};

/// One step of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
        }
    }
}

/// What one operation does.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Read(u64),
    Write(u64),
    /// Read the key, then write it with the context the read returned.
    ReadModifyWrite(u64),
}

/// Chooses keys.
#[derive(Debug, Clone)]
enum KeyChooser {
    Uniform(u64),
    Zipfian(Zipf<f64>),
}

/// Chooses operations and keys, and builds requests.
#[derive(Debug, Clone)]
pub struct Generator {
    workload: Workload,
    read_fraction: f64,
    keys: KeyChooser,
    key_count: u64,
    /// Path prefix up to the key: `/buckets/{bucket}/keys/`.
    prefix: String,
    read_query: String,
    write_query: String,
    host: HeaderValue,
    value: Bytes,
}

/// The key's name: fixed width so every request has the same size.
fn key_name(index: u64) -> String {
    format!("k{index:010}")
}

impl Generator {
    /// A generator for `load` against `bucket`, with quorum query parameters.
    pub fn new(
        load: &Load,
        bucket: &str,
        r: Option<&str>,
        w: Option<&str>,
        host: &str,
    ) -> anyhow::Result<Self> {
        let keys = match load.key_dist {
            KeyDist::Uniform => KeyChooser::Uniform(load.keys),
            // Precision loss above 2^53 keys is irrelevant at any key count we
            // can write.
            #[allow(clippy::cast_precision_loss)]
            KeyDist::Zipfian => {
                KeyChooser::Zipfian(Zipf::new(load.keys as f64, load.zipf_exponent)?)
            }
        };
        Ok(Self {
            workload: load.workload,
            read_fraction: load.read_fraction,
            keys,
            key_count: load.keys,
            prefix: format!("/buckets/{bucket}/keys/"),
            read_query: r.map(|r| format!("?r={r}")).unwrap_or_default(),
            write_query: w.map(|w| format!("?w={w}")).unwrap_or_default(),
            host: HeaderValue::from_str(host)?,
            // A fixed, non-trivial value: compression or deduplication on the
            // way would make the figures lie, so it is not all one byte.
            value: Bytes::from(
                (0..load.value_size_bytes)
                    .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
                    .collect::<Vec<u8>>(),
            ),
        })
    }

    /// The next operation of the workload.
    pub fn next(&self, rng: &mut SmallRng) -> Op {
        let key = self.key(rng);
        match self.workload {
            Workload::Write => Op::Write(key),
            Workload::Read => Op::Read(key),
            Workload::Mixed => {
                if rng.random::<f64>() < self.read_fraction {
                    Op::Read(key)
                } else {
                    Op::Write(key)
                }
            }
            Workload::Rmw => Op::ReadModifyWrite(key),
        }
    }

    /// The write of preload ticket `ticket`: every key once, in order.
    pub fn preload(&self, ticket: u64) -> Op {
        Op::Write(ticket % self.key_count)
    }

    fn key(&self, rng: &mut SmallRng) -> u64 {
        match &self.keys {
            KeyChooser::Uniform(n) => rng.random_range(0..*n),
            KeyChooser::Zipfian(zipf) => {
                // Zipf samples ranks in [1, n] as floats; rank 1 is hottest.
                // Truncation is the intent.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let rank = zipf.sample(rng) as u64;
                rank.saturating_sub(1).min(self.key_count - 1)
            }
        }
    }

    /// A `GET` of `key`.
    pub fn read(&self, key: u64) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::builder()
            .method(Method::GET)
            .uri(format!(
                "{}{}{}",
                self.prefix,
                key_name(key),
                self.read_query
            ))
            .header(header::HOST, self.host.clone())
            .body(Full::new(Bytes::new()))?)
    }

    /// A `PUT` of the value to `key`, with `context` when one is known.
    pub fn write(
        &self,
        key: u64,
        context: Option<&HeaderValue>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "{}{}{}",
                self.prefix,
                key_name(key),
                self.write_query
            ))
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(context) = context {
            builder = builder.header("x-riak-vclock", context.clone());
        }
        Ok(builder.body(Full::new(self.value.clone()))?)
    }
}
