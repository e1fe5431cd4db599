//! Time as the state machine sees it: a point on a monotonic line measured
//! from an arbitrary origin chosen by the caller.
//!
//! The protocol never reads a clock. A real driver maps
//! `std::time::Instant` onto [`Time`] with `Time::from_duration(start.elapsed())`;
//! the simulator advances a virtual clock. Nothing here knows which one it is.
//!
//! Invariant: arithmetic saturates instead of panicking, so a far-future timer
//! or a caller that passes a time slightly in the past can never crash the
//! protocol.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// A point in time, as a duration since an origin the driver picked.
///
/// Only differences between two `Time`s from the same driver mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(Duration);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(Duration::ZERO);

    /// The point `since_origin` after the origin.
    pub const fn from_duration(since_origin: Duration) -> Self {
        Time(since_origin)
    }

    /// The point `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Time(Duration::from_millis(ms))
    }

    /// How far this point lies from the origin.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, rhs: Duration) -> Time {
        Time(self.0.checked_add(rhs).unwrap_or(Duration::MAX))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_millis(5);
        assert_eq!(
            t.saturating_duration_since(Time::from_millis(9)),
            Duration::ZERO
        );
        assert_eq!(
            Time::from_millis(9).saturating_duration_since(t),
            Duration::from_millis(4)
        );
        assert_eq!((t + Duration::MAX).as_duration(), Duration::MAX);
    }
}
