//! Replica RPC messages from peers: `node::rpc::decode_envelope` (requests)
//! and `node::rpc::decode_response` (answers). Garbage is an error, never a
//! panic; whatever decodes carries only well-formed objects and re-encodes
//! to bytes that decode to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use node::rpc::{self, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = rpc::decode_envelope(data) {
        assert_eq!(envelope.format, rpc::RPC_FORMAT);
        if let Request::Merge { object, .. } | Request::Hint { object, .. } = &envelope.request {
            assert!(object.is_well_formed());
        }
        let bytes = rpc::encode(&envelope);
        let again = rpc::decode_envelope(&bytes).expect("a re-encoded envelope decodes");
        assert_eq!(rpc::encode(&again), bytes);
    }
    if let Ok(response) = rpc::decode_response(data) {
        if let Response::Object(Some(object)) | Response::Written { object, .. } = &response {
            assert!(object.is_well_formed());
        }
        let bytes = rpc::encode(&response);
        let again = rpc::decode_response(&bytes).expect("a re-encoded response decodes");
        assert_eq!(rpc::encode(&again), bytes);
    }
});
