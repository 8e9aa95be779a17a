//! Contract cases for webhooks: endpoints round-trip under their limit, disabling abandons live
//! deliveries, one delivery per event and endpoint (with its job, atomically), attempts counted
//! with the endpoint's failure streak, admin retries only of failed or abandoned deliveries,
//! cascades, and purges of finished deliveries by cutoff and limit.

use shop::Conflict;
use shop::PageRequest;
use shop::StoreError;
use shop::jobs::NewJob;
use shop::webhooks::{
    DeliveryAttempt, DeliveryQuery, DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges,
    WebhookEventType, WebhookSecret,
};
use uuid::Uuid;

use crate::{SharedStore, at};

/// An enabled endpoint subscribed to `order.paid` and `order.refunded`, created at `at(seconds)`.
pub fn webhook_endpoint(url: &str, seconds: i64) -> WebhookEndpoint {
    WebhookEndpoint {
        id: Uuid::now_v7(),
        url: url.to_owned(),
        description: Some("ERP — «orders» ✓".into()),
        events: vec![WebhookEventType::OrderPaid, WebhookEventType::OrderRefunded],
        secret: WebhookSecret::generate(),
        disabled_at: None,
        disabled_reason: None,
        consecutive_failures: 0,
        created_at: at(seconds),
        updated_at: at(seconds),
    }
}

/// A pending delivery of a new `order.paid` event to `endpoint`, created at `at(seconds)`.
pub fn webhook_delivery(endpoint: Uuid, seconds: i64) -> WebhookDelivery {
    WebhookDelivery {
        id: Uuid::now_v7(),
        endpoint_id: endpoint,
        event_id: Uuid::now_v7(),
        event_type: WebhookEventType::OrderPaid,
        payload: r#"{"id":"x","type":"order.paid","data":{"order":{"note":"Zoë ✓"}}}"#.into(),
        state: DeliveryState::Pending,
        attempts: 0,
        last_status: None,
        last_error: None,
        last_attempt_at: None,
        created_at: at(seconds),
        updated_at: at(seconds),
    }
}

fn deliver_job(delivery: &WebhookDelivery) -> NewJob {
    NewJob::new("webhooks.deliver", serde_json::json!({ "deliveryId": delivery.id.to_string() }), delivery.created_at)
        .queue("webhooks")
        .unique_key(format!("webhooks.deliver:{}", delivery.id))
}

fn attempt(delivery: &WebhookDelivery, state: DeliveryState, status: Option<u16>, seconds: i64) -> DeliveryAttempt {
    DeliveryAttempt {
        delivery_id: delivery.id,
        endpoint_id: delivery.endpoint_id,
        state,
        status,
        error: (state != DeliveryState::Succeeded).then(|| format!("answered {status:?}")),
        at: at(seconds),
        attempted: true,
    }
}

async fn add_endpoint(store: &SharedStore, url: &str, seconds: i64) -> WebhookEndpoint {
    store.insert_webhook_endpoint(&webhook_endpoint(url, seconds), 20).await.unwrap()
}

async fn add_delivery(store: &SharedStore, endpoint: Uuid, seconds: i64) -> WebhookDelivery {
    let delivery = webhook_delivery(endpoint, seconds);
    assert!(store.insert_webhook_delivery(&delivery, &deliver_job(&delivery)).await.unwrap());
    delivery
}

async fn delivery(store: &SharedStore, id: Uuid) -> WebhookDelivery {
    store.find_webhook_delivery(id).await.unwrap().expect("the delivery exists")
}

pub async fn webhook_endpoints_round_trip_under_their_limit(store: SharedStore) {
    assert!(store.list_webhook_endpoints().await.unwrap().is_empty());
    let first = webhook_endpoint("https://hooks.example.com/a?x=1", 0);
    assert_eq!(store.insert_webhook_endpoint(&first, 2).await.unwrap(), first, "every field comes back");
    assert_eq!(store.find_webhook_endpoint(first.id).await.unwrap(), Some(first.clone()));
    let second = webhook_endpoint("https://hooks.example.com/b", 1);
    store.insert_webhook_endpoint(&second, 2).await.unwrap();
    let third = webhook_endpoint("https://hooks.example.com/c", 2);
    match store.insert_webhook_endpoint(&third, 2).await {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict, Conflict::WebhookEndpointLimit),
        other => panic!("a third endpoint over a limit of 2: {other:?}"),
    }
    let listed: Vec<Uuid> = store.list_webhook_endpoints().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(listed, [first.id, second.id], "oldest first");
    assert!(store.find_webhook_endpoint(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn webhook_endpoint_changes_and_disabling(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let secret = WebhookSecret::generate();
    let changes = WebhookEndpointChanges {
        url: Some("https://hooks.example.com/new".into()),
        events: Some(vec![WebhookEventType::OrderCancelled]),
        description: Some(None),
        secret: Some(secret.clone()),
        enable: false,
    };
    let changed = store.update_webhook_endpoint(endpoint.id, &changes, at(5)).await.unwrap();
    assert_eq!(changed.url, "https://hooks.example.com/new");
    assert_eq!(changed.events, [WebhookEventType::OrderCancelled]);
    assert_eq!((changed.description, changed.secret, changed.updated_at), (None, secret, at(5)));
    let missing = store.update_webhook_endpoint(Uuid::now_v7(), &changes, at(5)).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));

    // Disabling abandons pending and failed deliveries, leaves finished ones alone.
    let pending = add_delivery(&store, endpoint.id, 1).await;
    let succeeded = add_delivery(&store, endpoint.id, 2).await;
    store.record_webhook_attempt(&attempt(&succeeded, DeliveryState::Succeeded, Some(200), 3)).await.unwrap();
    let failed = add_delivery(&store, endpoint.id, 3).await;
    store.record_webhook_attempt(&attempt(&failed, DeliveryState::Failed, Some(500), 4)).await.unwrap();
    let disabled = store.disable_webhook_endpoint(endpoint.id, "failing", at(10)).await.unwrap().unwrap();
    assert_eq!((disabled.disabled_at, disabled.disabled_reason.as_deref()), (Some(at(10)), Some("failing")));
    assert!(!disabled.enabled());
    assert_eq!(delivery(&store, pending.id).await.state, DeliveryState::Abandoned);
    assert_eq!(delivery(&store, failed.id).await.state, DeliveryState::Abandoned);
    assert_eq!(delivery(&store, succeeded.id).await.state, DeliveryState::Succeeded);
    assert_eq!(store.disable_webhook_endpoint(endpoint.id, "again", at(11)).await.unwrap(), None, "already");
    assert_eq!(store.disable_webhook_endpoint(Uuid::now_v7(), "gone", at(11)).await.unwrap(), None);

    // Enabling clears the reason and the failure streak.
    assert_eq!(disabled.consecutive_failures, 1);
    let enable = WebhookEndpointChanges { enable: true, ..Default::default() };
    let enabled = store.update_webhook_endpoint(endpoint.id, &enable, at(12)).await.unwrap();
    assert!(enabled.enabled());
    assert_eq!((enabled.disabled_reason, enabled.consecutive_failures), (None, 0));
}

pub async fn webhook_deliveries_are_unique_per_event_and_enqueue_their_job(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let delivery = webhook_delivery(endpoint.id, 1);
    let job = deliver_job(&delivery);
    assert!(store.insert_webhook_delivery(&delivery, &job).await.unwrap());
    assert_eq!(store.find_webhook_delivery(delivery.id).await.unwrap(), Some(delivery.clone()));
    assert!(store.find_job(job.id).await.unwrap().is_some(), "the job is enqueued with the delivery");
    // The same event for the same endpoint again (a dispatch job that ran twice): nothing added.
    let again = WebhookDelivery { id: Uuid::now_v7(), ..delivery.clone() };
    let again_job = deliver_job(&again);
    assert!(!store.insert_webhook_delivery(&again, &again_job).await.unwrap());
    assert!(store.find_webhook_delivery(again.id).await.unwrap().is_none());
    assert!(store.find_job(again_job.id).await.unwrap().is_none(), "nor its job");
    // The same event for another endpoint is another delivery.
    let other = add_endpoint(&store, "https://hooks.example.com/b", 0).await;
    let elsewhere = WebhookDelivery { id: Uuid::now_v7(), endpoint_id: other.id, ..delivery.clone() };
    assert!(store.insert_webhook_delivery(&elsewhere, &deliver_job(&elsewhere)).await.unwrap());
}

pub async fn webhook_deliveries_list_newest_first_filtered_and_paged(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let other = add_endpoint(&store, "https://hooks.example.com/b", 0).await;
    let mut ids = Vec::new();
    for seconds in 0..5 {
        ids.push(add_delivery(&store, endpoint.id, seconds).await);
    }
    add_delivery(&store, other.id, 9).await;
    store.record_webhook_attempt(&attempt(&ids[1], DeliveryState::Failed, Some(503), 10)).await.unwrap();
    let query = |state, page, limit| DeliveryQuery {
        endpoint_id: endpoint.id,
        state,
        page: PageRequest::new(Some(page), Some(limit)).unwrap(),
    };
    let first = store.list_webhook_deliveries(&query(None, 1, 2)).await.unwrap();
    assert_eq!(first.total, 5);
    assert_eq!(first.items.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[4].id, ids[3].id]);
    let last = store.list_webhook_deliveries(&query(None, 3, 2)).await.unwrap();
    assert_eq!(last.items.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[0].id]);
    let failed = store.list_webhook_deliveries(&query(Some(DeliveryState::Failed), 1, 10)).await.unwrap();
    assert_eq!((failed.total, failed.items[0].id), (1, ids[1].id));
    assert_eq!(failed.items[0].last_status, Some(503));
}

pub async fn webhook_attempts_count_the_endpoints_failure_streak(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let first = add_delivery(&store, endpoint.id, 1).await;
    let second = add_delivery(&store, endpoint.id, 2).await;
    let after = store.record_webhook_attempt(&attempt(&first, DeliveryState::Failed, Some(500), 3)).await.unwrap();
    assert_eq!(after.unwrap().consecutive_failures, 1);
    let after = store.record_webhook_attempt(&attempt(&second, DeliveryState::Failed, None, 4)).await.unwrap();
    assert_eq!(after.unwrap().consecutive_failures, 2, "across deliveries");
    let recorded = delivery(&store, second.id).await;
    assert_eq!((recorded.state, recorded.attempts, recorded.last_status), (DeliveryState::Failed, 1, None));
    assert_eq!((recorded.last_error.as_deref(), recorded.last_attempt_at), (Some("answered None"), Some(at(4))));
    let after = store.record_webhook_attempt(&attempt(&first, DeliveryState::Succeeded, Some(204), 5)).await.unwrap();
    assert_eq!(after.unwrap().consecutive_failures, 0, "a success resets the streak");
    let recorded = delivery(&store, first.id).await;
    assert_eq!((recorded.state, recorded.attempts, recorded.last_status), (DeliveryState::Succeeded, 2, Some(204)));
    // Abandoned without an attempt: neither counted nor a failure.
    let unsent = DeliveryAttempt { attempted: false, ..attempt(&second, DeliveryState::Abandoned, None, 6) };
    let after = store.record_webhook_attempt(&unsent).await.unwrap();
    assert_eq!(after.unwrap().consecutive_failures, 0);
    let recorded = delivery(&store, second.id).await;
    assert_eq!(
        (recorded.state, recorded.attempts, recorded.last_attempt_at),
        (DeliveryState::Abandoned, 1, Some(at(4)))
    );
    // Of a delivery that is gone: nothing.
    let gone = webhook_delivery(endpoint.id, 7);
    assert_eq!(store.record_webhook_attempt(&attempt(&gone, DeliveryState::Failed, None, 7)).await.unwrap(), None);
}

pub async fn webhook_attempts_change_only_live_deliveries(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let succeeded = add_delivery(&store, endpoint.id, 1).await;
    store.record_webhook_attempt(&attempt(&succeeded, DeliveryState::Succeeded, Some(200), 2)).await.unwrap();
    let late = store.record_webhook_attempt(&attempt(&succeeded, DeliveryState::Failed, Some(500), 3)).await.unwrap();
    assert_eq!(late, None, "a finished delivery is not changed");
    let recorded = delivery(&store, succeeded.id).await;
    assert_eq!((recorded.state, recorded.attempts, recorded.last_status), (DeliveryState::Succeeded, 1, Some(200)));
    assert_eq!(store.find_webhook_endpoint(endpoint.id).await.unwrap().unwrap().consecutive_failures, 0);
    // Not attempted: an existing error (the last real failure) is kept; none is filled in.
    let failed = add_delivery(&store, endpoint.id, 4).await;
    store.record_webhook_attempt(&attempt(&failed, DeliveryState::Failed, Some(500), 5)).await.unwrap();
    let not_sent = |delivery: &WebhookDelivery, state, seconds| DeliveryAttempt {
        error: Some("not sent: the breaker is open".into()),
        attempted: false,
        ..attempt(delivery, state, None, seconds)
    };
    store.record_webhook_attempt(&not_sent(&failed, DeliveryState::Failed, 6)).await.unwrap();
    let recorded = delivery(&store, failed.id).await;
    assert_eq!((recorded.state, recorded.attempts, recorded.last_status), (DeliveryState::Failed, 1, Some(500)));
    assert_eq!(recorded.last_error.as_deref(), Some("answered Some(500)"));
    let pending = add_delivery(&store, endpoint.id, 7).await;
    let after = store.record_webhook_attempt(&not_sent(&pending, DeliveryState::Pending, 8)).await.unwrap();
    assert_eq!(after.unwrap().consecutive_failures, 1, "not attempted: not a failure");
    let recorded = delivery(&store, pending.id).await;
    assert_eq!((recorded.state, recorded.attempts), (DeliveryState::Pending, 0));
    assert_eq!(recorded.last_error.as_deref(), Some("not sent: the breaker is open"));
    // Disabling abandons both: an attempt in flight meanwhile neither revives nor counts.
    store.disable_webhook_endpoint(endpoint.id, "disabled by an admin", at(9)).await.unwrap().unwrap();
    let in_flight = store.record_webhook_attempt(&attempt(&failed, DeliveryState::Failed, Some(500), 10)).await;
    assert_eq!(in_flight.unwrap(), None);
    assert_eq!(delivery(&store, failed.id).await.state, DeliveryState::Abandoned);
    assert_eq!(store.find_webhook_endpoint(endpoint.id).await.unwrap().unwrap().consecutive_failures, 1);
}

pub async fn only_failed_or_abandoned_webhook_deliveries_are_requeued(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let pending = add_delivery(&store, endpoint.id, 1).await;
    // Its first job is still queued: the state says pending.
    let refused = store.requeue_webhook_delivery(endpoint.id, pending.id, &deliver_job(&pending), at(2)).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::DeliveryState))));
    // Failed, but its retry job is still live: the unique key refuses a second.
    store.record_webhook_attempt(&attempt(&pending, DeliveryState::Failed, Some(500), 2)).await.unwrap();
    let duplicate = store.requeue_webhook_delivery(endpoint.id, pending.id, &deliver_job(&pending), at(3)).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(Conflict::DuplicateJob))));
    // Abandoned, its job finished (here: a delivery whose job never existed): requeued.
    let abandoned = webhook_delivery(endpoint.id, 4);
    assert!(store.insert_webhook_delivery(&abandoned, &deliver_job(&abandoned).unique_key("other")).await.unwrap());
    store.record_webhook_attempt(&attempt(&abandoned, DeliveryState::Abandoned, Some(500), 5)).await.unwrap();
    let job = deliver_job(&abandoned);
    let requeued = store.requeue_webhook_delivery(endpoint.id, abandoned.id, &job, at(6)).await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (DeliveryState::Pending, 1));
    assert!(store.find_job(job.id).await.unwrap().is_some());
    let wrong_endpoint = store.requeue_webhook_delivery(Uuid::now_v7(), abandoned.id, &job, at(7)).await;
    assert!(matches!(wrong_endpoint, Err(StoreError::NotFound)));
}

pub async fn deleting_a_webhook_endpoint_deletes_its_deliveries(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let delivery = add_delivery(&store, endpoint.id, 1).await;
    store.delete_webhook_endpoint(endpoint.id).await.unwrap();
    assert!(store.find_webhook_endpoint(endpoint.id).await.unwrap().is_none());
    assert!(store.find_webhook_delivery(delivery.id).await.unwrap().is_none());
    assert!(matches!(store.delete_webhook_endpoint(endpoint.id).await, Err(StoreError::NotFound)));
}

pub async fn stale_live_webhook_deliveries_are_abandoned(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let stale_pending = add_delivery(&store, endpoint.id, 1).await;
    let stale_failed = add_delivery(&store, endpoint.id, 2).await;
    store.record_webhook_attempt(&attempt(&stale_failed, DeliveryState::Failed, Some(500), 3)).await.unwrap();
    let recently_failed = add_delivery(&store, endpoint.id, 4).await;
    store.record_webhook_attempt(&attempt(&recently_failed, DeliveryState::Failed, Some(500), 60)).await.unwrap();
    let succeeded = add_delivery(&store, endpoint.id, 5).await;
    store.record_webhook_attempt(&attempt(&succeeded, DeliveryState::Succeeded, Some(200), 6)).await.unwrap();
    let abandoned = store.abandon_stale_webhook_deliveries(at(50), "abandoned: stale", at(100)).await.unwrap();
    assert_eq!(abandoned, 2);
    for id in [stale_pending.id, stale_failed.id] {
        let recorded = delivery(&store, id).await;
        assert_eq!(
            (recorded.state, recorded.last_error.as_deref()),
            (DeliveryState::Abandoned, Some("abandoned: stale"))
        );
        assert_eq!(recorded.updated_at, at(100));
    }
    assert_eq!(delivery(&store, recently_failed.id).await.state, DeliveryState::Failed, "changed since the cutoff");
    assert_eq!(delivery(&store, succeeded.id).await.state, DeliveryState::Succeeded);
    let streak = store.find_webhook_endpoint(endpoint.id).await.unwrap().unwrap().consecutive_failures;
    assert_eq!(streak, 0, "abandoning is not a failure (the last attempt succeeded)");
    assert_eq!(store.abandon_stale_webhook_deliveries(at(50), "abandoned: stale", at(101)).await.unwrap(), 0);
}

pub async fn finished_webhook_deliveries_are_purged_by_cutoff_and_limit(store: SharedStore) {
    let endpoint = add_endpoint(&store, "https://hooks.example.com/a", 0).await;
    let mut finished = Vec::new();
    for seconds in 0..3 {
        let delivery = add_delivery(&store, endpoint.id, seconds).await;
        store.record_webhook_attempt(&attempt(&delivery, DeliveryState::Succeeded, Some(200), seconds)).await.unwrap();
        finished.push(delivery);
    }
    let abandoned = add_delivery(&store, endpoint.id, 3).await;
    store.record_webhook_attempt(&attempt(&abandoned, DeliveryState::Abandoned, None, 3)).await.unwrap();
    let live = add_delivery(&store, endpoint.id, 0).await;
    let recent = add_delivery(&store, endpoint.id, 100).await;
    store.record_webhook_attempt(&attempt(&recent, DeliveryState::Succeeded, Some(200), 100)).await.unwrap();
    assert_eq!(store.purge_webhook_deliveries(at(50), 2).await.unwrap(), 2, "the limit holds");
    assert_eq!(store.purge_webhook_deliveries(at(50), 100).await.unwrap(), 2);
    assert_eq!(store.purge_webhook_deliveries(at(50), 100).await.unwrap(), 0);
    assert!(store.find_webhook_delivery(live.id).await.unwrap().is_some(), "live deliveries stay");
    assert!(store.find_webhook_delivery(recent.id).await.unwrap().is_some(), "recent ones stay");
    assert!(store.find_webhook_delivery(abandoned.id).await.unwrap().is_none());
}
