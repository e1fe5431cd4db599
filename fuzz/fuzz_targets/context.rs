//! Causal contexts (`X-Riak-Vclock`): `storage::context::decode` on any
//! header text never panics; a genuine context round-trips; a flipped bit
//! or another key is refused.
//!
//! The keyed tag stops the fuzzer from reaching the body decoder through
//! `decode` (it cannot forge tags), so the body's decoder — postcard of a
//! `VersionVector`, which is all a context body holds — is fuzzed directly
//! and every vector it yields is sealed and opened again.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use starling_fuzz::CLUSTER_SECRET;
use storage::{ContextKey, VersionVector, context};

fuzz_target!(|data: &[u8]| {
    let key = ContextKey::derive(CLUSTER_SECRET);
    let text = String::from_utf8_lossy(data);
    if let Ok(version) = context::decode(&key, b"b", b"k", &text) {
        // Only a seed that is a genuine context gets here.
        let sealed = context::encode(&key, b"b", b"k", &version);
        assert_eq!(context::decode(&key, b"b", b"k", &sealed).ok(), Some(version));
    }
    // Any bytes as valid base64: exercises the format and tag checks.
    let _ = context::decode(&key, b"b", b"k", &STANDARD.encode(data));

    let Ok(version) = postcard::from_bytes::<VersionVector>(data) else {
        return;
    };
    let sealed = context::encode(&key, b"b", b"k", &version);
    assert_eq!(
        context::decode(&key, b"b", b"k", &sealed).as_ref(),
        Ok(&version)
    );
    let other = ContextKey::derive(b"another cluster's secret");
    assert!(context::decode(&other, b"b", b"k", &sealed).is_err());
    assert!(context::decode(&key, b"b", b"other key", &sealed).is_err());
    let mut raw = STANDARD.decode(&sealed).expect("encode writes base64");
    let bit = data.len() % (raw.len() * 8);
    raw[bit / 8] ^= 1 << (bit % 8);
    assert!(context::decode(&key, b"b", b"k", &STANDARD.encode(&raw)).is_err());
});
