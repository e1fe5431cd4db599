//! Resource limits of the server, so that overload is refused quickly
//! instead of growing memory: connection and request slots, the byte budget
//! of request bodies held in memory, and a guard that closes connections
//! whose client stops reading.
//!
//! Every slot is a semaphore permit taken without waiting (`try_acquire`):
//! a request that finds no slot is answered `503` with `Retry-After` at
//! once. Nothing here queues.
//!
//! What each limit bounds (see [`crate::ServeConfig`] for the settings):
//! - connections: open sockets and their tasks and buffers;
//! - requests in flight: concurrent handler work, backend calls included;
//! - body bytes: request bodies being read or held while their request is
//!   handled (each body is buffered whole before it reaches the backend);
//! - write stalls: responses a client does not read (a connection whose
//!   writes make no progress for the write timeout is closed, freeing its
//!   buffered response).
//!
//! Slow clients that send nothing, or send their head byte by byte, are
//! bounded by hyper's header read timeout, which also closes idle
//! keep-alive connections; slow bodies by the body read timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Granularity of the body byte budget: permits count KiB, so one
/// semaphore covers budgets far beyond 4 GiB.
const BUDGET_UNIT_BYTES: usize = 1024;

/// The shared budget of request body bytes held in memory.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    units_max: usize,
}

/// Bytes of the body budget held by one request; returned on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
    units: usize,
}

impl BodyBudget {
    /// A budget of `size_bytes_max` bytes (at least one unit).
    pub fn new(size_bytes_max: usize) -> BodyBudget {
        let units_max = size_bytes_max
            .div_ceil(BUDGET_UNIT_BYTES)
            .clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            units: Arc::new(Semaphore::new(units_max)),
            units_max,
        }
    }

    /// Grows `reservation` to cover `size_bytes` in total, without waiting.
    /// `false`: the budget is spent (the caller answers `503`).
    pub fn reserve(&self, reservation: &mut Reservation, size_bytes: usize) -> bool {
        let wanted = size_bytes.div_ceil(BUDGET_UNIT_BYTES);
        if wanted <= reservation.units {
            return true;
        }
        let more = wanted - reservation.units;
        if more > self.units_max {
            return false;
        }
        let Ok(more_u32) = u32::try_from(more) else {
            return false;
        };
        match self.units.clone().try_acquire_many_owned(more_u32) {
            Ok(permit) => {
                reservation.permits.push(permit);
                reservation.units = wanted;
                true
            }
            Err(_) => false,
        }
    }

    /// Bytes of the budget in use now.
    pub fn in_use_bytes(&self) -> usize {
        (self.units_max - self.units.available_permits()) * BUDGET_UNIT_BYTES
    }
}

/// A stream whose writes fail with `TimedOut` when they make no progress
/// for `write_timeout`: a client that stops reading cannot hold a response
/// (and its connection slot) forever. Reads are left to hyper's timeouts.
#[derive(Debug)]
pub struct StallGuard<S> {
    inner: S,
    write_timeout: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, write_timeout: Duration) -> StallGuard<S> {
        StallGuard {
            inner,
            write_timeout,
            stalled_since: None,
        }
    }

    /// Called with the result of a write-side poll: arms the stall timer on
    /// `Pending`, disarms it on progress, and turns a stall past the
    /// timeout into an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let timeout = self.write_timeout;
                let timer = self.stalled_since.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_body_budget_is_shared_and_returned() {
        let budget = BodyBudget::new(10 * 1024);
        let mut a = Reservation::default();
        assert!(budget.reserve(&mut a, 6 * 1024));
        assert!(budget.reserve(&mut a, 6 * 1024), "already covered");
        let mut b = Reservation::default();
        assert!(!budget.reserve(&mut b, 5 * 1024));
        assert!(budget.reserve(&mut b, 4 * 1024));
        assert_eq!(budget.in_use_bytes(), 10 * 1024);
        drop(a);
        assert!(budget.reserve(&mut b, 10 * 1024));
        assert!(!budget.reserve(&mut Reservation::default(), 100 * 1024));
    }

    #[tokio::test]
    async fn a_write_that_stalls_fails_after_the_timeout() {
        // A pipe whose reader never reads: writes stall once it is full.
        let (client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let result = guarded.write_all(&vec![0u8; 64 * 1024]).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(client);
    }
}
