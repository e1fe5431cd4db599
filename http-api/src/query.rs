//! Query-string parameters: decoding and Riak's spellings of quorums,
//! booleans and timeouts.
//!
//! Like Riak, the first occurrence of a repeated parameter wins and unknown
//! parameters are ignored. Values are decoded strictly (`%XX` must be hex);
//! a bad encoding or a bad value is a `400` naming the parameter.

use std::time::Duration;

use storage::Quorum;

use crate::error::ApiError;
use crate::routes::decode_segment;

/// The longest `timeout` a client may ask for (one hour): a bound on how
/// long a request may hold resources.
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

/// Decoded query parameters in the order given.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses the raw query string (without `?`).
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((
                decode_segment(name, "query parameter name")?,
                decode_segment(value, "query parameter value")?,
            ));
        }
        Ok(Query { pairs })
    }

    /// The first value of `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A quorum parameter (`r`, `w`, ...); `default` and absence are `None`.
    pub fn quorum(&self, name: &str) -> Result<Option<Quorum>, ApiError> {
        let Some(text) = self.value(name) else {
            return Ok(None);
        };
        match Quorum::parse(text) {
            Ok(Quorum::Default) => Ok(None),
            Ok(quorum) => Ok(Some(quorum)),
            Err(_) => Err(ApiError::bad_request(format!(
                "{name} query parameter must be an integer or one of the following words: \
                 'one', 'quorum', 'all' or 'default' (got {text:?})"
            ))),
        }
    }

    /// A boolean parameter (`notfound_ok`, `basic_quorum`): `true`, `false`,
    /// or `default` (= absent).
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.value(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("default") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} query parameter must be true or false"
            ))),
        }
    }

    /// Whether `name=true` was given (Riak's `returnbody`: anything else is
    /// false).
    pub fn is_true(&self, name: &str) -> bool {
        self.value(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The `timeout` parameter in milliseconds.
    pub fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        let Some(text) = self.value("timeout") else {
            return Ok(None);
        };
        match text.trim().parse::<u64>() {
            Ok(ms) if (1..=TIMEOUT_MS_MAX).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
            _ => Err(ApiError::bad_request(format!(
                "Bad timeout value {text:?}: expected milliseconds between 1 and \
                 {TIMEOUT_MS_MAX}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_riak_spellings() {
        let q = Query::parse(Some("r=2&w=QUORUM&dw=default&pr=one&notfound_ok=false&r=3")).unwrap();
        assert_eq!(
            q.quorum("r").unwrap(),
            Some(Quorum::Count(2)),
            "first occurrence wins"
        );
        assert_eq!(q.quorum("w").unwrap(), Some(Quorum::Quorum));
        assert_eq!(q.quorum("dw").unwrap(), None);
        assert_eq!(q.quorum("pw").unwrap(), None);
        assert_eq!(q.boolean("notfound_ok").unwrap(), Some(false));
        assert_eq!(q.boolean("basic_quorum").unwrap(), None);
    }

    #[test]
    fn refuses_bad_values() {
        let q = Query::parse(Some("w=most&basic_quorum=maybe&timeout=-5")).unwrap();
        assert_eq!(q.quorum("w").unwrap_err().status, 400);
        assert_eq!(q.boolean("basic_quorum").unwrap_err().status, 400);
        assert_eq!(q.timeout().unwrap_err().status, 400);
        assert!(Query::parse(Some("r=%G1")).is_err());
        let q = Query::parse(Some("timeout=1500&returnbody=TRUE")).unwrap();
        assert_eq!(q.timeout().unwrap(), Some(Duration::from_millis(1500)));
        assert!(q.is_true("returnbody"));
    }
}
