//! Contract cases for idempotency keys: a key starts once per user and scope (also under
//! concurrency), an expired lock is taken over by exactly one caller, a completed request keeps
//! its outcome and order, a released one can start again, and expired records are purged by
//! cutoff and limit.

use shop::accounts::{Role, User};
use shop::orders::{CheckoutResult, IdempotencyBegin, IdempotencyRecord, IdempotencyState, Order, PaymentEventRecord};
use uuid::Uuid;

use crate::{SharedStore, add_products, at, new_order, new_user};

/// A checkout request with `key`, started at `at(seconds)`, locked for 30 seconds and kept for a day.
pub fn new_idempotency_record(user_id: Uuid, key: &str, seconds: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        user_id,
        scope: "checkout".into(),
        key: key.into(),
        request_hash: [7; 32],
        state: IdempotencyState::InProgress { locked_until: at(seconds + 30) },
        order_id: None,
        created_at: at(seconds),
        expires_at: at(seconds + 86_400),
    }
}

async fn add_customer(store: &SharedStore, email: &str) -> User {
    store.insert_user(&new_user(email, Role::Customer, 0), &[]).await.unwrap()
}

async fn begin(store: &SharedStore, record: &IdempotencyRecord, seconds: i64) -> IdempotencyBegin {
    store.begin_idempotent(record, at(seconds)).await.unwrap()
}

/// An order of one product placed by `user_id`, for a completed request to name.
async fn placed_order(store: &SharedStore, user_id: Uuid, slug: &str) -> Order {
    let products = add_products(store, &[(slug, 500, 5)]).await;
    store.place_order(&new_order(user_id, &[(&products[0], 1)], 0), None, &[]).await.unwrap().unwrap()
}

fn locked_until(record: &IdempotencyRecord, seconds: i64) -> IdempotencyRecord {
    IdempotencyRecord { state: IdempotencyState::InProgress { locked_until: at(seconds) }, ..record.clone() }
}

pub async fn idempotent_requests_start_once(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let grace = add_customer(&store, "grace@example.com").await;
    let record = new_idempotency_record(ada.id, "key-1", 0);
    assert_eq!(begin(&store, &record, 0).await, IdempotencyBegin::Started);
    assert_eq!(begin(&store, &record, 1).await, IdempotencyBegin::Existing(record.clone()), "every field round-trips");
    // The same key with another body finds the first request: the service compares the hashes.
    let other_body = IdempotencyRecord { request_hash: [9; 32], ..new_idempotency_record(ada.id, "key-1", 2) };
    assert_eq!(begin(&store, &other_body, 2).await, IdempotencyBegin::Existing(record.clone()));
    for other in [
        new_idempotency_record(ada.id, "key-2", 3),
        IdempotencyRecord { scope: "refund".into(), ..new_idempotency_record(ada.id, "key-1", 3) },
        new_idempotency_record(grace.id, "key-1", 3),
    ] {
        assert_eq!(begin(&store, &other, 3).await, IdempotencyBegin::Started, "keys are per user and scope");
    }
    let long_key = new_idempotency_record(ada.id, &"k".repeat(255), 4);
    assert_eq!(begin(&store, &long_key, 4).await, IdempotencyBegin::Started);
    assert_eq!(begin(&store, &long_key, 5).await, IdempotencyBegin::Existing(long_key));
}

pub async fn expired_idempotency_locks_are_taken_over(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let record = new_idempotency_record(ada.id, "key-1", 0);
    assert_eq!(begin(&store, &record, 0).await, IdempotencyBegin::Started);
    let retry = new_idempotency_record(ada.id, "key-1", 30);
    assert_eq!(begin(&store, &retry, 30).await, IdempotencyBegin::Existing(record.clone()), "locked until now");
    // The holder died: the lock is ours now, the rest of the record stays as it was.
    let resumed = locked_until(&record, 61);
    let late = new_idempotency_record(ada.id, "key-1", 31);
    assert_eq!(begin(&store, &late, 31).await, IdempotencyBegin::Resumed(resumed.clone()));
    assert_eq!(
        begin(&store, &new_idempotency_record(ada.id, "key-1", 45), 45).await,
        IdempotencyBegin::Existing(resumed)
    );
}

pub async fn completed_idempotent_requests_keep_their_outcome(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let record = new_idempotency_record(ada.id, "key-1", 0);
    begin(&store, &record, 0).await;
    let paid = placed_order(&store, ada.id, "dune").await;
    store.complete_idempotent(ada.id, "checkout", "key-1", CheckoutResult::Paid, paid.id).await.unwrap();
    let completed = IdempotencyRecord {
        state: IdempotencyState::Completed(CheckoutResult::Paid),
        order_id: Some(paid.id),
        ..record.clone()
    };
    // Long after its lock: a completed request is never taken over.
    assert_eq!(
        begin(&store, &new_idempotency_record(ada.id, "key-1", 500), 500).await,
        IdempotencyBegin::Existing(completed)
    );

    let declined = new_idempotency_record(ada.id, "key-2", 10);
    begin(&store, &declined, 10).await;
    let cancelled = placed_order(&store, ada.id, "emma").await;
    store.complete_idempotent(ada.id, "checkout", "key-2", CheckoutResult::Declined, cancelled.id).await.unwrap();
    let expected = IdempotencyRecord {
        state: IdempotencyState::Completed(CheckoutResult::Declined),
        order_id: Some(cancelled.id),
        ..declined
    };
    assert_eq!(begin(&store, &expected, 11).await, IdempotencyBegin::Existing(expected.clone()));

    // A request that ended without effect is forgotten and may be sent again.
    let failed = new_idempotency_record(ada.id, "key-3", 20);
    begin(&store, &failed, 20).await;
    store.release_idempotent(ada.id, "checkout", "key-3").await.unwrap();
    assert_eq!(begin(&store, &new_idempotency_record(ada.id, "key-3", 21), 21).await, IdempotencyBegin::Started);
    store.release_idempotent(ada.id, "checkout", "never-sent").await.unwrap();
}

pub async fn idempotency_records_are_purged_by_cutoff_and_limit(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    for (key, expires) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
        let record = IdempotencyRecord { expires_at: at(expires), ..new_idempotency_record(ada.id, key, 0) };
        begin(&store, &record, 0).await;
    }
    let order = placed_order(&store, ada.id, "dune").await;
    store.complete_idempotent(ada.id, "checkout", "a", CheckoutResult::Pending, order.id).await.unwrap();
    assert_eq!(store.purge_idempotency_records(at(30), 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_idempotency_records(at(30), 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.purge_idempotency_records(at(30), 10).await.unwrap(), 0);
    for (key, kept) in [("a", false), ("b", false), ("c", true), ("d", true)] {
        let started =
            begin(&store, &new_idempotency_record(ada.id, key, 1000), 1000).await == IdempotencyBegin::Started;
        assert_eq!(started, !kept, "{key}: the cutoff is exclusive");
    }
}

pub async fn concurrent_idempotent_starts_have_one_winner(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let outcomes = |record: IdempotencyRecord, seconds: i64| {
        let store = store.clone();
        async move {
            let mut starts = tokio::task::JoinSet::new();
            for attempt in 0..8 {
                let store = store.clone();
                // Each caller brings its own lock time, as each request would.
                let record = locked_until(&record, seconds + 60 + attempt);
                starts.spawn(async move { store.begin_idempotent(&record, at(seconds)).await.unwrap() });
            }
            let mut outcomes = Vec::new();
            while let Some(outcome) = starts.join_next().await {
                outcomes.push(outcome.unwrap());
            }
            outcomes
        }
    };
    let record = new_idempotency_record(ada.id, "key-1", 0);
    let first = outcomes(record.clone(), 0).await;
    assert_eq!(first.iter().filter(|outcome| **outcome == IdempotencyBegin::Started).count(), 1);
    assert!(first.iter().all(|outcome| matches!(outcome, IdempotencyBegin::Started | IdempotencyBegin::Existing(_))));

    // Every lock has expired by 200: of the callers that come then, one takes the record over.
    let second = outcomes(record, 200).await;
    let resumed: Vec<_> = second.iter().filter(|outcome| matches!(outcome, IdempotencyBegin::Resumed(_))).collect();
    assert_eq!(resumed.len(), 1, "{second:?}");
    let IdempotencyBegin::Resumed(winner) = resumed[0] else { unreachable!() };
    for outcome in &second {
        if let IdempotencyBegin::Existing(seen) = outcome {
            assert_eq!(seen, winner, "the others see the winner's lock");
        }
    }
}

pub async fn payment_events_are_recorded_once_and_purged(store: SharedStore) {
    let event = |provider: &str, id: &str, seconds: i64| PaymentEventRecord {
        provider: provider.into(),
        event_id: id.into(),
        event_type: "charged".into(),
        order_id: Some(Uuid::now_v7()),
        outcome: "order paid".into(),
        received_at: at(seconds),
    };
    assert!(!store.payment_event_seen("sandbox", "evt_1").await.unwrap());
    assert!(store.record_payment_event(&event("sandbox", "evt_1", 10)).await.unwrap());
    assert!(store.payment_event_seen("sandbox", "evt_1").await.unwrap());
    assert!(!store.record_payment_event(&event("sandbox", "evt_1", 11)).await.unwrap(), "recorded once");
    assert!(!store.payment_event_seen("other", "evt_1").await.unwrap(), "ids are per provider");
    let unlinked =
        PaymentEventRecord { order_id: None, event_type: "customer.created".into(), ..event("other", "evt_1", 20) };
    assert!(store.record_payment_event(&unlinked).await.unwrap());
    store.record_payment_event(&event("sandbox", "evt_2", 30)).await.unwrap();
    assert_eq!(store.purge_payment_events(at(30), 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_payment_events(at(30), 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.purge_payment_events(at(30), 10).await.unwrap(), 0);
    assert!(store.payment_event_seen("sandbox", "evt_2").await.unwrap(), "the cutoff is exclusive");
}
