//! Size and sibling limits of the store, and the checks that enforce them.
//!
//! Limits keep one key from eating a node: a bounded bucket and key size keeps
//! the key layout within fjall's 64 KiB key limit, the object size limit
//! bounds memory per request, and the sibling limit catches clients that
//! write blindly (without a causal context) in a loop.
//!
//! This module does not log or count; the store does, so warnings carry the
//! bucket and key.
//!
//! Invariants (checked by [`Limits::validate`]): every warn threshold is at
//! most its refuse threshold, and a maximal bucket plus a maximal key fit the
//! key layout.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::layout::STORE_KEY_SIZE_BYTES_MAX;

/// Limits of one store. `Default` gives Riak-like values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest bucket name accepted. Default 255; at most 65,535 (the layout
    /// stores it in a `u16`).
    pub bucket_size_bytes_max: u64,
    /// Longest key accepted. Default 1,024 (generous for real keys, bounded
    /// so listings and hints stay small). `bucket_size_bytes_max +
    /// key_size_bytes_max + 2` must not exceed 65,535 (fjall's key limit).
    pub key_size_bytes_max: u64,
    /// Encoded object size (all siblings) above which a write logs a warning.
    /// Default 5 MiB. Must be at most `object_size_bytes_max`.
    pub object_size_bytes_warn: u64,
    /// Encoded object size above which a write is refused with
    /// [`StoreError::ObjectTooLarge`]. Default 50 MiB.
    pub object_size_bytes_max: u64,
    /// Sibling count above which a write logs a warning. Default 25. Must be
    /// at most `siblings_max`.
    pub siblings_warn: usize,
    /// Sibling count above which a client write is refused with
    /// [`StoreError::TooManySiblings`] (repair traffic is exempt). Default 100;
    /// at least 1.
    pub siblings_max: usize,
    /// Most hints (copies kept for unreachable primaries) stored at once;
    /// beyond it a hinted write finds no room and the write's coordinator
    /// counts one acknowledgement less. Default 1,000,000.
    pub hints_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bucket_size_bytes_max: 255,
            key_size_bytes_max: 1024,
            object_size_bytes_warn: 5 * 1024 * 1024,
            object_size_bytes_max: 50 * 1024 * 1024,
            siblings_warn: 25,
            siblings_max: 100,
            hints_max: 1_000_000,
        }
    }
}

impl Limits {
    /// Checks that the limits are consistent with each other and the layout.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::InvalidConfig(why));
        if self.bucket_size_bytes_max == 0 || self.key_size_bytes_max == 0 {
            return bad("bucket and key size limits must be at least 1 byte".into());
        }
        if self.bucket_size_bytes_max > u64::from(u16::MAX) {
            return bad(format!(
                "bucket_size_bytes_max must be at most {}, got {}",
                u16::MAX,
                self.bucket_size_bytes_max
            ));
        }
        // The longest store key is a hint's: owner (16) ++ name key (2 +
        // bucket + key); a placed key adds 6 bytes to the name key.
        let key_size_bytes_max = 18u64
            .saturating_add(self.bucket_size_bytes_max)
            .saturating_add(self.key_size_bytes_max);
        if key_size_bytes_max > STORE_KEY_SIZE_BYTES_MAX as u64 {
            return bad(format!(
                "bucket_size_bytes_max + key_size_bytes_max + 18 must be at most {STORE_KEY_SIZE_BYTES_MAX}, got {key_size_bytes_max}"
            ));
        }
        if self.object_size_bytes_warn > self.object_size_bytes_max {
            return bad("object_size_bytes_warn must not exceed object_size_bytes_max".into());
        }
        if self.siblings_max == 0 || self.siblings_warn > self.siblings_max {
            return bad("siblings_max must be at least 1 and at least siblings_warn".into());
        }
        Ok(())
    }

    /// Checks a bucket name and key against the limits.
    pub fn check_key(&self, bucket: &[u8], key: &[u8]) -> Result<(), StoreError> {
        self.check_bucket(bucket)?;
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if key.len() as u64 > self.key_size_bytes_max {
            return Err(StoreError::KeyTooLarge {
                size_bytes: key.len() as u64,
                size_bytes_max: self.key_size_bytes_max,
            });
        }
        Ok(())
    }

    /// Checks a bucket name against the limits.
    pub fn check_bucket(&self, bucket: &[u8]) -> Result<(), StoreError> {
        if bucket.is_empty() {
            return Err(StoreError::EmptyBucket);
        }
        if bucket.len() as u64 > self.bucket_size_bytes_max {
            return Err(StoreError::BucketTooLarge {
                size_bytes: bucket.len() as u64,
                size_bytes_max: self.bucket_size_bytes_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_inconsistent_limits_do_not() {
        assert!(Limits::default().validate().is_ok());
        let too_long = Limits {
            bucket_size_bytes_max: 40_000,
            key_size_bytes_max: 40_000,
            ..Limits::default()
        };
        assert!(too_long.validate().is_err());
        let warn_above_max = Limits {
            siblings_warn: 200,
            ..Limits::default()
        };
        assert!(warn_above_max.validate().is_err());
        let no_siblings = Limits {
            siblings_max: 0,
            siblings_warn: 0,
            ..Limits::default()
        };
        assert!(no_siblings.validate().is_err());
    }

    #[test]
    fn keys_are_checked() {
        let limits = Limits::default();
        assert!(matches!(
            limits.check_key(b"", b"k"),
            Err(StoreError::EmptyBucket)
        ));
        assert!(matches!(
            limits.check_key(b"b", b""),
            Err(StoreError::EmptyKey)
        ));
        assert!(matches!(
            limits.check_key(&[b'b'; 256], b"k"),
            Err(StoreError::BucketTooLarge {
                size_bytes: 256,
                size_bytes_max: 255
            })
        ));
        assert!(matches!(
            limits.check_key(b"b", &[b'k'; 1025]),
            Err(StoreError::KeyTooLarge {
                size_bytes: 1025,
                size_bytes_max: 1024
            })
        ));
        assert!(limits.check_key(&[b'b'; 255], &[b'k'; 1024]).is_ok());
    }
}
