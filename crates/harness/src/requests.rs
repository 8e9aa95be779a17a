//! What the harness received: the head of each recent request, kept so a test can check what
//! actually reached the upstream (a `traceparent`, an idempotency key, …).

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many requests the harness keeps; older ones are forgotten first.
pub const KEPT_REQUESTS: usize = 100;

/// One request as the harness read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target without its query string.
    pub path: String,
    /// Names in lowercase, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of the header `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Parses a request head (request line and header lines); `None` when there is no request line.
    pub(crate) fn parse_head(head: &str) -> Option<Self> {
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split_whitespace();
        let method = request_line.next()?.to_owned();
        let target = request_line.next()?;
        let path = target.split('?').next().unwrap_or(target).to_owned();
        let headers = lines
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Some(Self { method, path, headers })
    }

    /// The announced body length; zero when absent or unreadable.
    pub(crate) fn content_length(&self) -> usize {
        self.header("content-length").and_then(|value| value.parse().ok()).unwrap_or(0)
    }
}

/// The last [`KEPT_REQUESTS`] requests, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if requests.len() == KEPT_REQUESTS {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}
