//! The HTTP surface end to end, against an in-memory backend: one test
//! binary so the suite links once.

#![allow(clippy::unwrap_used)]

mod bad_requests;
mod buckets;
mod common;
mod limits;
mod objects;
mod openapi;
mod request_ids;
mod security;
