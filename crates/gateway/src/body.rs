//! Bodies through the gateway: a response body from a backend streamed to the client under a
//! total deadline, an idle timeout between pieces and a size limit, which holds the backend's
//! in-flight count and the load-shedding permit until its last byte; and the gateway's own
//! small answers.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use resilience::ShedPermit;
use tokio::time::{Instant, Sleep};

use crate::backend::InFlight;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the gateway sends or forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body the gateway made: empty or a few bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why a response stream was cut.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the response took longer than the total timeout")]
    Deadline,
    #[error("the backend paused longer than the idle timeout")]
    Idle,
    #[error("the response body is larger than the limit")]
    TooLarge,
}

/// What a streamed response keeps alive until it ends, and whom to tell how it ended.
pub struct Holds {
    pub in_flight: InFlight,
    pub permit: Option<ShedPermit>,
    /// Called once: `true` when the body ended cleanly, `false` when the backend broke it off
    /// (an error, a stall, too many bytes). Not called when the client goes away first.
    pub report: Option<Box<dyn FnOnce(bool) + Send>>,
}

/// A backend's response body with the gateway's limits.
pub struct LimitedBody<B> {
    inner: B,
    idle_timeout: Duration,
    /// Since when the backend has kept us waiting (None while pieces flow, and while the client
    /// is not reading: its backpressure is not the backend's idleness). The idle timer is only
    /// re-armed when the stream waits, not on every piece (timer-wheel work per frame showed in
    /// the profile).
    waiting_since: Option<Instant>,
    idle: Pin<Box<Sleep>>,
    deadline: Instant,
    remaining: u64,
    holds: Holds,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, deadline: Instant, idle_timeout: Duration, max_bytes: u64, holds: Holds) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle_timeout,
            waiting_since: None,
            idle: Box::pin(tokio::time::sleep_until((now + idle_timeout).min(deadline))),
            deadline,
            remaining: max_bytes,
            holds,
        }
    }

    /// Ends the stream with `error`, telling the pool when the backend is to blame.
    fn fail(&mut self, error: BoxError, backends_fault: bool) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if backends_fault && let Some(report) = self.holds.report.take() {
            report(false);
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    if length > this.remaining {
                        return this.fail(StreamError::TooLarge.into(), true);
                    }
                    this.remaining -= length;
                }
                this.waiting_since = None;
                if Instant::now() >= this.deadline {
                    return this.fail(StreamError::Deadline.into(), false);
                }
                // hyper stops polling once the body says it is done (a known length reached), so
                // the clean end is reported here rather than waiting for a `None` never asked for.
                if this.inner.is_end_stream()
                    && let Some(report) = this.holds.report.take()
                {
                    report(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => this.fail(error.into(), true),
            Poll::Ready(None) => {
                if let Some(report) = this.holds.report.take() {
                    report(true);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let waiting_since = *this.waiting_since.get_or_insert_with(Instant::now);
                loop {
                    let wake_at = (waiting_since + this.idle_timeout).min(this.deadline);
                    if this.idle.deadline() != wake_at {
                        this.idle.as_mut().reset(wake_at);
                    }
                    if this.idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    if now >= this.deadline {
                        return this.fail(StreamError::Deadline.into(), false);
                    }
                    if now >= waiting_since + this.idle_timeout {
                        return this.fail(StreamError::Idle.into(), true);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::{BodyExt as _, Full, StreamBody};

    use super::*;
    use crate::backend::Backend;

    fn hold_a_backend() -> (Arc<Backend>, Holds) {
        let backend = Arc::new(Backend::new("b", "127.0.0.1:1".parse().unwrap(), 1, std::time::Instant::now()));
        let in_flight = backend.start_request();
        (backend, Holds { in_flight, permit: None, report: None })
    }

    #[tokio::test]
    async fn a_body_within_the_limits_passes_and_releases_the_backend_when_done() {
        let (backend, holds) = hold_a_backend();
        let far = Instant::now() + Duration::from_secs(60);
        let body = LimitedBody::new(Full::new(Bytes::from_static(b"hello")), far, Duration::from_secs(5), 5, holds);
        assert_eq!(backend.in_flight(), 1);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(backend.in_flight(), 0, "the count ends with the body");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_cut() {
        let (_backend, holds) = hold_a_backend();
        let far = Instant::now() + Duration::from_secs(60);
        let body = LimitedBody::new(Full::new(Bytes::from_static(b"hello")), far, Duration::from_secs(5), 4, holds);
        let error = body.collect().await.err().unwrap();
        assert!(error.to_string().contains("larger than the limit"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_hits_the_idle_timeout_and_a_slow_one_the_deadline() {
        let (_backend, holds) = hold_a_backend();
        let stalled = never_sends();
        let far = Instant::now() + Duration::from_secs(60);
        let error = LimitedBody::new(stalled, far, Duration::from_secs(2), 100, holds).collect().await.err().unwrap();
        assert!(error.to_string().contains("idle timeout"), "{error}");

        let (_backend, holds) = hold_a_backend();
        let soon = Instant::now() + Duration::from_secs(1);
        let stalled = never_sends();
        let error = LimitedBody::new(stalled, soon, Duration::from_secs(30), 100, holds).collect().await.err().unwrap();
        assert!(error.to_string().contains("total timeout"), "{error}");
    }

    /// A body that never sends anything.
    fn never_sends() -> StreamBody<futures::stream::Pending<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        StreamBody::new(futures::stream::pending())
    }
}
