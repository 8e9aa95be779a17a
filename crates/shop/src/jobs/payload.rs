//! The typed contract between who enqueues a job and its handler: a payload type per job kind,
//! serialised into the job's JSON and read back by the handler, with the kind beside it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::model::{Job, NewJob};

/// A job kind's payload. `KIND` names the handler that runs it (`payments.settle`, …).
pub trait JobPayload: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
}

impl NewJob {
    /// A job of `P::KIND` carrying `payload`, on the `default` queue, due now.
    pub fn of<P: JobPayload>(payload: &P, now: OffsetDateTime) -> Self {
        // Payloads are plain records of ids and strings, which always serialise; were one ever
        // not to, the job would carry `null` and its handler dead-letter it as malformed.
        let value = serde_json::to_value(payload).unwrap_or_else(|error| {
            tracing::error!(kind = P::KIND, %error, "a job payload did not serialise");
            serde_json::Value::Null
        });
        Self::new(P::KIND, value, now)
    }
}

impl Job {
    /// The job's payload as `P`; an error names what is wrong (another kind, a malformed payload).
    pub fn payload_as<P: JobPayload>(&self) -> Result<P, String> {
        if self.kind != P::KIND {
            return Err(format!("a {} job is not a {}", self.kind, P::KIND));
        }
        P::deserialize(&self.payload).map_err(|error| format!("malformed {} payload: {error}", P::KIND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ping {
        order_id: uuid::Uuid,
    }

    impl JobPayload for Ping {
        const KIND: &'static str = "test.ping";
    }

    fn stored(new: NewJob) -> Job {
        let now = new.created_at;
        Job {
            id: new.id,
            kind: new.kind,
            queue: new.queue,
            payload: new.payload,
            priority: new.priority,
            state: super::super::JobState::Queued,
            attempts: 0,
            max_attempts: new.max_attempts,
            run_at: new.run_at,
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            unique_key: new.unique_key,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    #[test]
    fn payloads_round_trip_under_their_kind() {
        let ping = Ping { order_id: uuid::Uuid::from_u128(7) };
        let job = stored(NewJob::of(&ping, time::OffsetDateTime::UNIX_EPOCH));
        assert_eq!(job.kind, "test.ping");
        assert_eq!(job.payload, serde_json::json!({ "orderId": "00000000-0000-0000-0000-000000000007" }));
        assert_eq!(job.payload_as::<Ping>(), Ok(ping));
        let other = Job { kind: "other.kind".into(), ..job.clone() };
        assert!(other.payload_as::<Ping>().unwrap_err().contains("other.kind"));
        let malformed = Job { payload: serde_json::json!({ "orderId": 3 }), ..job };
        assert!(malformed.payload_as::<Ping>().unwrap_err().contains("malformed"));
    }
}
