//! Contract cases for the job queue: claims, leases, retries, unique keys, the outbox, the
//! operators' list and retry, queue depths, purges and recurring schedules.

use std::collections::HashSet;

use serde_json::json;
use shop::accounts::Role;
use shop::jobs::{Claim, Job, JobFailure, JobQuery, JobSort, JobState, NewJob, QueueDepth};
use shop::{Conflict, PageRequest, StoreError};
use uuid::Uuid;

use crate::{SharedStore, at, new_user};

/// A job of `kind` on the `default` queue, created and due at `at(seconds)`.
pub fn new_job(kind: &str, seconds: i64) -> NewJob {
    NewJob::new(kind, json!({ "kind": kind }), at(seconds))
}

/// A claim of up to `limit` due jobs at `at(seconds)`, leased for 30 seconds.
pub fn claim_at(queue: &str, worker: &str, limit: u32, seconds: i64) -> Claim {
    Claim {
        queue: queue.to_owned(),
        worker: worker.to_owned(),
        limit,
        now: at(seconds),
        lease_until: at(seconds + 30),
        kinds: None,
    }
}

async fn enqueue(store: &SharedStore, job: &NewJob) -> Uuid {
    assert!(store.enqueue_job(job).await.unwrap(), "{} was not enqueued", job.kind);
    job.id
}

async fn find(store: &SharedStore, id: Uuid) -> Job {
    store.find_job(id).await.unwrap().expect("the job exists")
}

/// Claims exactly one job of `queue` as `worker` at `at(seconds)`.
async fn claim_one(store: &SharedStore, queue: &str, worker: &str, seconds: i64) -> Job {
    let mut claimed = store.claim_jobs(&claim_at(queue, worker, 1, seconds)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due job in {queue}");
    claimed.remove(0)
}

fn ids(jobs: &[Job]) -> Vec<Uuid> {
    jobs.iter().map(|job| job.id).collect()
}

fn retry_at(seconds: i64) -> JobFailure {
    JobFailure { error: "upstream timed out".into(), retry_at: Some(at(seconds)), attempt_counted: true }
}

fn fatal() -> JobFailure {
    JobFailure { error: "the address does not exist".into(), retry_at: None, attempt_counted: true }
}

pub async fn jobs_round_trip(store: SharedStore) {
    let payload = json!({ "to": "ada@example.com", "lines": [1, 2.5, null], "nested": { "ok": true, "name": "é" } });
    let new = NewJob::new("mail.send", payload.clone(), at(0))
        .queue("mail")
        .priority(7)
        .run_at(at(10))
        .max_attempts(4)
        .unique_key("welcome:ada");
    assert!(store.enqueue_job(&new).await.unwrap());
    let job = find(&store, new.id).await;
    assert_eq!(job.id, new.id);
    assert_eq!(job.kind, "mail.send");
    assert_eq!(job.queue, "mail");
    assert_eq!(job.payload, payload);
    assert_eq!(job.priority, 7);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.attempts, job.max_attempts), (0, 4));
    assert_eq!(job.run_at, at(10));
    assert_eq!((job.lease_owner, job.lease_expires_at, job.last_error), (None, None, None));
    assert_eq!(job.unique_key.as_deref(), Some("welcome:ada"));
    assert_eq!((job.created_at, job.updated_at, job.finished_at), (at(0), at(0), None));
    assert!(store.find_job(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn claims_take_due_jobs_by_priority_then_run_at(store: SharedStore) {
    let late = enqueue(&store, &new_job("late", 1)).await;
    let urgent = enqueue(&store, &new_job("urgent", 3).priority(5)).await;
    let early = enqueue(&store, &new_job("early", 0)).await;
    let future = enqueue(&store, &new_job("future", 0).run_at(at(100))).await;
    let elsewhere = enqueue(&store, &new_job("elsewhere", 0).queue("mail")).await;
    let first = store.claim_jobs(&claim_at("default", "w1", 2, 10)).await.unwrap();
    assert_eq!(ids(&first), [urgent, early], "priority first, then the earliest run_at");
    for job in &first {
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.lease_owner.as_deref(), Some("w1"));
        assert_eq!(job.lease_expires_at, Some(at(40)));
        assert_eq!(job.updated_at, at(10));
    }
    assert_eq!(find(&store, urgent).await, first[0]);
    let rest = store.claim_jobs(&claim_at("default", "w2", 10, 10)).await.unwrap();
    assert_eq!(ids(&rest), [late], "a job due in the future is not claimed, nor another queue's");
    assert!(store.claim_jobs(&claim_at("default", "w2", 10, 99)).await.unwrap().is_empty());
    assert_eq!(ids(&store.claim_jobs(&claim_at("default", "w2", 10, 100)).await.unwrap()), [future]);
    assert_eq!(ids(&store.claim_jobs(&claim_at("mail", "w2", 10, 100)).await.unwrap()), [elsewhere]);
    assert!(store.claim_jobs(&claim_at("default", "w2", 0, 100)).await.unwrap().is_empty());
}

pub async fn claims_take_only_the_kinds_asked_for(store: SharedStore) {
    let known = enqueue(&store, &new_job("known", 0)).await;
    let newer = enqueue(&store, &new_job("newer", 0).priority(9)).await;
    let only_known = Claim { kinds: Some(vec!["known".into(), "other".into()]), ..claim_at("default", "w1", 10, 10) };
    assert_eq!(ids(&store.claim_jobs(&only_known).await.unwrap()), [known]);
    let none = Claim { kinds: Some(Vec::new()), ..claim_at("default", "w1", 10, 10) };
    assert!(store.claim_jobs(&none).await.unwrap().is_empty(), "no kinds, no jobs");
    let waiting = find(&store, newer).await;
    assert_eq!((waiting.state, waiting.attempts), (JobState::Queued, 0));
    assert_eq!(ids(&store.claim_jobs(&claim_at("default", "w2", 10, 10)).await.unwrap()), [newer], "None: any kind");
}

pub async fn concurrent_claims_take_each_job_once(store: SharedStore) {
    let mut enqueued = HashSet::new();
    for index in 0..200 {
        enqueued.insert(enqueue(&store, &new_job("bulk", index % 7).priority(index as i32 % 3)).await);
    }
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        workers.spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim_jobs(&claim_at("default", &format!("w{worker}"), 5, 10)).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                assert!(batch.len() <= 5);
                claimed.extend(batch);
                tokio::task::yield_now().await;
            }
        });
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    while let Some(claimed) = workers.join_next().await {
        for job in claimed.unwrap() {
            total += 1;
            assert_eq!(job.attempts, 1, "claimed once, so one attempt");
            seen.insert(job.id);
        }
    }
    assert_eq!(total, 200, "no job was handed out twice");
    assert_eq!(seen, enqueued);
}

pub async fn only_the_lease_owner_finishes_a_job(store: SharedStore) {
    let first = enqueue(&store, &new_job("first", 0)).await;
    let second = enqueue(&store, &new_job("second", 1)).await;
    let claimed = store.claim_jobs(&claim_at("default", "w1", 2, 10)).await.unwrap();
    assert_eq!(ids(&claimed), [first, second]);
    assert!(!store.complete_job(first, "w2", at(11)).await.unwrap());
    assert!(!store.fail_job(first, "w2", &fatal(), at(11)).await.unwrap());
    assert!(store.extend_leases("w2", &[first, second], at(90)).await.unwrap().is_empty());
    assert_eq!(store.release_jobs("w2", &[first, second], at(11)).await.unwrap(), 0);
    assert_eq!(find(&store, first).await, claimed[0], "another worker changed nothing");
    let mut held = store.extend_leases("w1", &[first, second, Uuid::now_v7()], at(90)).await.unwrap();
    held.sort();
    assert_eq!(held, [first, second]);
    assert_eq!(find(&store, second).await.lease_expires_at, Some(at(90)));
    assert!(store.extend_leases("w1", &[], at(90)).await.unwrap().is_empty());
    assert!(store.complete_job(first, "w1", at(12)).await.unwrap());
    let done = find(&store, first).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!((done.finished_at, done.updated_at), (Some(at(12)), at(12)));
    assert_eq!((done.lease_owner, done.lease_expires_at), (None, None));
    assert!(!store.complete_job(first, "w1", at(13)).await.unwrap(), "a finished job is no longer held");
    assert_eq!(store.extend_leases("w1", &[first, second], at(95)).await.unwrap(), [second]);
}

pub async fn expired_leases_are_recovered(store: SharedStore) {
    let retried = enqueue(&store, &new_job("retried", 0).queue("a").max_attempts(3)).await;
    let last_try = enqueue(&store, &new_job("last-try", 0).queue("b").max_attempts(1)).await;
    claim_one(&store, "a", "w1", 10).await;
    claim_one(&store, "b", "w1", 10).await;
    assert_eq!(store.recover_expired_leases(at(39)).await.unwrap(), 0, "leases run until 40");
    assert_eq!(store.recover_expired_leases(at(40)).await.unwrap(), 2);
    let failed = find(&store, retried).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!((failed.run_at, failed.updated_at, failed.finished_at), (at(40), at(40), None));
    assert_eq!((failed.lease_owner, failed.lease_expires_at), (None, None));
    assert_eq!(failed.last_error.as_deref(), Some("lease expired: the worker stopped without finishing the job"));
    assert_eq!(failed.attempts, 1);
    let dead = find(&store, last_try).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.finished_at, Some(at(40)));
    assert_eq!(dead.lease_owner, None);
    assert!(dead.last_error.unwrap().starts_with("lease expired"));
    assert!(!store.complete_job(retried, "w1", at(41)).await.unwrap(), "the dead worker's lease is gone");
    let again = claim_one(&store, "a", "w2", 40).await;
    assert_eq!((again.id, again.attempts), (retried, 2));
    assert!(store.claim_jobs(&claim_at("b", "w2", 10, 1_000)).await.unwrap().is_empty());
    assert_eq!(store.recover_expired_leases(at(40)).await.unwrap(), 0);
}

pub async fn failed_jobs_wait_for_their_retry_at(store: SharedStore) {
    let id = enqueue(&store, &new_job("flaky", 0)).await;
    claim_one(&store, "default", "w1", 10).await;
    let failure = JobFailure { error: "é".repeat(5_000), retry_at: Some(at(60)), attempt_counted: true };
    assert!(store.fail_job(id, "w1", &failure, at(11)).await.unwrap());
    let failed = find(&store, id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!((failed.run_at, failed.updated_at, failed.finished_at), (at(60), at(11), None));
    assert_eq!((failed.lease_owner, failed.lease_expires_at), (None, None));
    assert_eq!(failed.last_error.unwrap().chars().count(), 2_000, "errors are truncated");
    assert!(!store.fail_job(id, "w1", &failure, at(12)).await.unwrap(), "no longer running");
    assert!(store.claim_jobs(&claim_at("default", "w1", 10, 59)).await.unwrap().is_empty());
    let again = claim_one(&store, "default", "w2", 60).await;
    assert_eq!((again.id, again.attempts), (id, 2));
}

pub async fn deferred_jobs_get_their_attempt_back(store: SharedStore) {
    let id = enqueue(&store, &new_job("refused", 0)).await;
    assert_eq!(claim_one(&store, "default", "w1", 10).await.attempts, 1);
    let deferral = JobFailure { error: "breaker open".into(), retry_at: Some(at(30)), attempt_counted: false };
    assert!(store.fail_job(id, "w1", &deferral, at(11)).await.unwrap());
    let deferred = find(&store, id).await;
    assert_eq!((deferred.state, deferred.attempts, deferred.run_at), (JobState::Failed, 0, at(30)));
    assert!(store.claim_jobs(&claim_at("default", "w1", 10, 29)).await.unwrap().is_empty());
    let again = claim_one(&store, "default", "w2", 30).await;
    assert_eq!((again.id, again.attempts), (id, 1), "the refused attempt was not counted");
}

pub async fn failing_without_a_retry_kills_the_job(store: SharedStore) {
    let id = enqueue(&store, &new_job("doomed", 0)).await;
    claim_one(&store, "default", "w1", 10).await;
    assert!(store.fail_job(id, "w1", &fatal(), at(12)).await.unwrap());
    let dead = find(&store, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!((dead.finished_at, dead.updated_at), (Some(at(12)), at(12)));
    assert_eq!(dead.last_error.as_deref(), Some("the address does not exist"));
    assert_eq!((dead.lease_owner, dead.lease_expires_at), (None, None));
    assert!(store.claim_jobs(&claim_at("default", "w1", 10, 10_000)).await.unwrap().is_empty());
}

pub async fn jobs_die_after_their_last_attempt(store: SharedStore) {
    let id = enqueue(&store, &new_job("flaky", 0).max_attempts(3)).await;
    let mut now = 10;
    for attempt in 1..=3 {
        let job = claim_one(&store, "default", "w1", now).await;
        assert_eq!(job.attempts, attempt);
        // The worker's rule: retry while attempts remain, else give up.
        let failure = if job.attempts < job.max_attempts { retry_at(now + 10) } else { fatal() };
        assert!(store.fail_job(id, "w1", &failure, at(now + 1)).await.unwrap());
        now += 10;
    }
    let dead = find(&store, id).await;
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 3));
    assert!(dead.finished_at.is_some());
    assert!(store.claim_jobs(&claim_at("default", "w1", 10, 10_000)).await.unwrap().is_empty());
}

pub async fn released_jobs_are_due_again(store: SharedStore) {
    let first = enqueue(&store, &new_job("first", 0)).await;
    let second = enqueue(&store, &new_job("second", 1)).await;
    store.claim_jobs(&claim_at("default", "w1", 2, 10)).await.unwrap();
    assert_eq!(store.release_jobs("w1", &[], at(15)).await.unwrap(), 0);
    assert_eq!(store.release_jobs("w1", &[first, second, Uuid::now_v7()], at(15)).await.unwrap(), 2);
    for id in [first, second] {
        let job = find(&store, id).await;
        assert_eq!(job.state, JobState::Queued);
        assert_eq!((job.run_at, job.updated_at), (at(15), at(15)));
        assert_eq!((job.lease_owner, job.lease_expires_at), (None, None));
        assert_eq!(job.attempts, 1, "the attempt already counted stays counted");
    }
    assert_eq!(store.release_jobs("w1", &[first], at(16)).await.unwrap(), 0, "no longer held");
    let again = store.claim_jobs(&claim_at("default", "w2", 10, 15)).await.unwrap();
    assert_eq!(ids(&again), [first, second]);
    assert!(again.iter().all(|job| job.attempts == 2));
}

pub async fn operators_retry_dead_and_failed_jobs(store: SharedStore) {
    let dead = enqueue(&store, &new_job("dead", 0).queue("dead")).await;
    claim_one(&store, "dead", "w1", 10).await;
    store.fail_job(dead, "w1", &fatal(), at(11)).await.unwrap();
    let retried = store.retry_job(dead, at(20), &crate::operator_audit(20)).await.unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!((retried.attempts, retried.run_at, retried.updated_at), (0, at(20), at(20)));
    assert_eq!((retried.finished_at, retried.lease_owner.as_deref()), (None, None));
    assert_eq!(find(&store, dead).await, retried);
    assert_eq!(claim_one(&store, "dead", "w1", 20).await.attempts, 1);

    let failed = enqueue(&store, &new_job("failed", 0).queue("failed")).await;
    claim_one(&store, "failed", "w1", 10).await;
    store.fail_job(failed, "w1", &retry_at(500), at(11)).await.unwrap();
    let retried = store.retry_job(failed, at(20), &crate::operator_audit(20)).await.unwrap();
    assert_eq!((retried.state, retried.attempts, retried.run_at), (JobState::Queued, 0, at(20)));

    let queued = enqueue(&store, &new_job("queued", 0).queue("queued")).await;
    let succeeded = enqueue(&store, &new_job("succeeded", 0).queue("succeeded")).await;
    claim_one(&store, "succeeded", "w1", 10).await;
    store.complete_job(succeeded, "w1", at(11)).await.unwrap();
    for id in [queued, succeeded, dead] {
        let error = store.retry_job(id, at(30), &crate::operator_audit(30)).await.unwrap_err();
        assert!(matches!(&error, StoreError::Conflict(Conflict::JobState)), "{error:?}");
    }
    assert_eq!(find(&store, succeeded).await.state, JobState::Succeeded, "a refused retry changes nothing");
    let error = store.retry_job(Uuid::now_v7(), at(30), &crate::operator_audit(30)).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
    // The two retries are audited with the job before and after; the refused ones are not.
    let query = shop::audit::AuditQuery { action: Some("job.retry".into()), ..Default::default() };
    let audited = store.list_audit(&query).await.unwrap();
    assert_eq!(audited.total, 2);
    let targets: Vec<&str> = audited.items.iter().map(|entry| entry.target.as_str()).collect();
    assert!(targets.contains(&format!("job:{dead}").as_str()) && targets.contains(&format!("job:{failed}").as_str()));
    let of_dead = audited.items.iter().find(|entry| entry.target == format!("job:{dead}")).unwrap();
    assert_eq!(of_dead.before.as_ref().unwrap()["state"], "dead");
    assert_eq!(of_dead.after.as_ref().unwrap()["state"], "queued");
    assert_eq!((of_dead.actor.as_str(), of_dead.request_id.as_deref()), ("ops", Some("request-20")));
}

pub async fn unique_keys_allow_one_live_job(store: SharedStore) {
    let first = enqueue(&store, &new_job("digest", 0).unique_key("digest:ada")).await;
    assert!(!store.enqueue_job(&new_job("digest", 1).unique_key("digest:ada")).await.unwrap(), "queued");
    assert!(
        store.enqueue_job(&new_job("digest", 1).queue("other").unique_key("digest:bob")).await.unwrap(),
        "other key"
    );
    assert!(store.enqueue_job(&new_job("digest", 1).queue("other")).await.unwrap(), "no key");
    assert!(store.enqueue_job(&new_job("digest", 1).queue("other")).await.unwrap(), "no key, again");
    claim_one(&store, "default", "w1", 10).await;
    assert!(!store.enqueue_job(&new_job("digest", 11).unique_key("digest:ada")).await.unwrap(), "running");
    store.fail_job(first, "w1", &retry_at(20), at(11)).await.unwrap();
    assert!(!store.enqueue_job(&new_job("digest", 12).unique_key("digest:ada")).await.unwrap(), "failed");
    let total = store.list_jobs(&JobQuery::default()).await.unwrap().total;
    assert_eq!(total, 4, "refused enqueues added nothing");
    assert_eq!(claim_one(&store, "default", "w1", 20).await.id, first);
    store.complete_job(first, "w1", at(21)).await.unwrap();
    let next = enqueue(&store, &new_job("digest", 22).unique_key("digest:ada")).await;
    assert_ne!(next, first, "a finished job frees its key");

    // A dead job frees its key too; reviving it while another holds the key is a conflict.
    let dead = enqueue(&store, &new_job("report", 0).queue("reports").unique_key("report")).await;
    claim_one(&store, "reports", "w1", 10).await;
    store.fail_job(dead, "w1", &fatal(), at(11)).await.unwrap();
    enqueue(&store, &new_job("report", 12).queue("reports").unique_key("report")).await;
    let error = store.retry_job(dead, at(13), &crate::operator_audit(13)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::DuplicateJob)), "{error:?}");
    assert_eq!(find(&store, dead).await.state, JobState::Dead);
}

pub async fn insert_user_enqueues_its_jobs_atomically(store: SharedStore) {
    let welcome = new_job("mail.welcome", 0).queue("mail");
    let audit = new_job("audit.signup", 0);
    let ada = new_user("ada@example.com", Role::Customer, 0);
    let user = store.insert_user(&ada, &[welcome.clone(), audit.clone()]).await.unwrap();
    assert_eq!(find(&store, welcome.id).await.payload, welcome.payload);
    assert_eq!(find(&store, audit.id).await.state, JobState::Queued);
    let orphan = new_job("mail.welcome", 1).queue("mail");
    let error = store
        .insert_user(&new_user("ada@example.com", Role::Staff, 1), std::slice::from_ref(&orphan))
        .await
        .unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::EmailTaken)), "{error:?}");
    let jobs = store.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(jobs.total, 2, "the failed sign-up left no job behind");
    assert!(!ids(&jobs.items).contains(&orphan.id));
    assert!(store.find_job(orphan.id).await.unwrap().is_none());
    assert!(store.find_user(user.id).await.unwrap().is_some());
    let solo = store.insert_user(&new_user("bob@example.com", Role::Customer, 2), &[]).await.unwrap();
    assert!(store.find_user(solo.id).await.unwrap().is_some());
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 2);
}

pub async fn job_list_filters_sorts_and_pages(store: SharedStore) {
    // Created (and last changed) at 0..4; due in the opposite order.
    let mut jobs = Vec::new();
    for (index, (kind, queue)) in [
        ("mail.send", "mail"),
        ("mail.send", "mail"),
        ("report", "default"),
        ("mail.send", "default"),
        ("report", "mail"),
    ]
    .into_iter()
    .enumerate()
    {
        let seconds = index as i64;
        jobs.push(enqueue(&store, &new_job(kind, seconds).queue(queue).run_at(at(100 - seconds))).await);
    }
    let running = claim_one(&store, "default", "w1", 200).await;
    assert_eq!(running.id, jobs[3], "the earliest due");

    let all = store.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(all.total, 5);
    assert_eq!(ids(&all.items), [jobs[3], jobs[4], jobs[2], jobs[1], jobs[0]], "most recently changed first");
    let by_run_at = store.list_jobs(&JobQuery { sort: JobSort::RunAt, ..JobQuery::default() }).await.unwrap();
    assert_eq!(ids(&by_run_at.items), [jobs[4], jobs[3], jobs[2], jobs[1], jobs[0]], "earliest due first");

    let mail = JobQuery { queue: Some("mail".into()), ..JobQuery::default() };
    assert_eq!(ids(&store.list_jobs(&mail).await.unwrap().items), [jobs[4], jobs[1], jobs[0]]);
    let kind = JobQuery { kind: Some("report".into()), ..JobQuery::default() };
    assert_eq!(ids(&store.list_jobs(&kind).await.unwrap().items), [jobs[4], jobs[2]]);
    let state = JobQuery { state: Some(JobState::Running), ..JobQuery::default() };
    assert_eq!(ids(&store.list_jobs(&state).await.unwrap().items), [jobs[3]]);
    let combined =
        JobQuery { state: Some(JobState::Queued), queue: Some("mail".into()), kind: Some("mail.send".into()), ..mail };
    assert_eq!(store.list_jobs(&combined).await.unwrap().total, 2);
    let nothing = JobQuery { queue: Some("nowhere".into()), ..JobQuery::default() };
    assert_eq!(store.list_jobs(&nothing).await.unwrap().total, 0);

    let page_two = JobQuery { page: PageRequest::new(Some(2), Some(2)).unwrap(), ..JobQuery::default() };
    let page = store.list_jobs(&page_two).await.unwrap();
    assert_eq!((page.total, page.request), (5, page_two.page));
    assert_eq!(ids(&page.items), [jobs[2], jobs[1]]);
    let beyond = JobQuery { page: PageRequest::new(Some(4), Some(2)).unwrap(), ..JobQuery::default() };
    let page = store.list_jobs(&beyond).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.total, 5);
}

pub async fn queue_depths_count_by_queue_and_state(store: SharedStore) {
    assert!(store.queue_depths(at(0)).await.unwrap().is_empty());
    enqueue(&store, &new_job("a", 0).run_at(at(20))).await;
    enqueue(&store, &new_job("b", 0).run_at(at(30))).await;
    enqueue(&store, &new_job("future", 0).run_at(at(500))).await;
    let failing = enqueue(&store, &new_job("c", 0).queue("mail").run_at(at(5))).await;
    let running = enqueue(&store, &new_job("d", 0).queue("mail").run_at(at(40)).priority(1)).await;
    enqueue(&store, &new_job("e", 0).queue("mail").run_at(at(45))).await;
    claim_one(&store, "mail", "w1", 10).await;
    store.fail_job(failing, "w1", &retry_at(15), at(11)).await.unwrap();
    assert_eq!(claim_one(&store, "mail", "w1", 40).await.id, running, "the higher priority");
    let mut depths = store.queue_depths(at(50)).await.unwrap();
    depths.sort_by_key(|depth| (depth.queue.clone(), depth.state.as_str()));
    let depth = |queue: &str, state, count, oldest_due| QueueDepth { queue: queue.into(), state, count, oldest_due };
    assert_eq!(
        depths,
        [
            depth("default", JobState::Queued, 3, Some(at(20))),
            depth("mail", JobState::Failed, 1, Some(at(15))),
            depth("mail", JobState::Queued, 1, Some(at(15))),
            depth("mail", JobState::Running, 1, None),
        ]
    );
    let early = store.queue_depths(at(0)).await.unwrap();
    assert!(early.iter().all(|depth| depth.oldest_due.is_none()), "nothing is due yet: {early:?}");
}

pub async fn finished_jobs_are_purged_by_state_cutoff_and_limit(store: SharedStore) {
    let mut succeeded = Vec::new();
    for finished in [10, 20, 30] {
        let id = enqueue(&store, &new_job("done", 0).queue("done")).await;
        claim_one(&store, "done", "w1", 0).await;
        store.complete_job(id, "w1", at(finished)).await.unwrap();
        succeeded.push(id);
    }
    let dead = enqueue(&store, &new_job("dead", 0).queue("dead")).await;
    claim_one(&store, "dead", "w1", 0).await;
    store.fail_job(dead, "w1", &fatal(), at(10)).await.unwrap();
    let queued = enqueue(&store, &new_job("waiting", 0)).await;

    assert_eq!(store.purge_jobs(JobState::Succeeded, at(25), 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(store.purge_jobs(JobState::Succeeded, at(25), 10).await.unwrap(), 1);
    assert_eq!(store.purge_jobs(JobState::Succeeded, at(25), 10).await.unwrap(), 0);
    assert!(store.find_job(succeeded[0]).await.unwrap().is_none());
    assert!(store.find_job(succeeded[1]).await.unwrap().is_none());
    assert!(store.find_job(succeeded[2]).await.unwrap().is_some(), "finished after the cutoff");
    assert_eq!(store.purge_jobs(JobState::Succeeded, at(30), 10).await.unwrap(), 0, "the cutoff is exclusive");
    assert!(store.find_job(dead).await.unwrap().is_some(), "another state");
    assert_eq!(store.purge_jobs(JobState::Queued, at(10_000), 10).await.unwrap(), 0, "never finished");
    assert_eq!(store.purge_jobs(JobState::Dead, at(25), 10).await.unwrap(), 1);
    assert!(store.find_job(dead).await.unwrap().is_none());
    assert!(store.find_job(queued).await.unwrap().is_some());
}

pub async fn schedules_advance_once_per_occurrence(store: SharedStore) {
    assert_eq!(store.scheduled_at("digest").await.unwrap(), None);
    let first = new_job("digest", 0);
    assert!(store.advance_schedule("digest", None, at(60), Some(&first)).await.unwrap());
    assert_eq!(store.scheduled_at("digest").await.unwrap(), Some(at(60)));
    assert_eq!(find(&store, first.id).await.state, JobState::Queued);
    let late = new_job("digest", 0);
    assert!(!store.advance_schedule("digest", None, at(60), Some(&late)).await.unwrap(), "already scheduled");
    assert!(store.find_job(late.id).await.unwrap().is_none());

    let second = new_job("digest", 60);
    assert!(store.advance_schedule("digest", Some(at(60)), at(120), Some(&second)).await.unwrap());
    assert_eq!(store.scheduled_at("digest").await.unwrap(), Some(at(120)));
    assert!(store.find_job(second.id).await.unwrap().is_some());
    let stale = new_job("digest", 60);
    assert!(!store.advance_schedule("digest", Some(at(60)), at(120), Some(&stale)).await.unwrap());
    assert!(store.find_job(stale.id).await.unwrap().is_none(), "a lost occurrence enqueues nothing");
    assert_eq!(store.scheduled_at("digest").await.unwrap(), Some(at(120)));

    assert!(store.advance_schedule("digest", Some(at(120)), at(180), None).await.unwrap(), "no job to enqueue");
    assert_eq!(store.scheduled_at("digest").await.unwrap(), Some(at(180)));
    assert!(!store.advance_schedule("purge", Some(at(0)), at(60), None).await.unwrap(), "never scheduled");
    assert_eq!(store.scheduled_at("purge").await.unwrap(), None);
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 2);
}

pub async fn concurrent_schedule_advances_have_one_winner(store: SharedStore) {
    assert_eq!(race_to_advance(&store, None, at(60)).await, 1, "one caller schedules the first occurrence");
    assert_eq!(race_to_advance(&store, Some(at(60)), at(120)).await, 1, "one caller wins the next one");
    assert_eq!(store.scheduled_at("digest").await.unwrap(), Some(at(120)));
    let jobs = store.list_jobs(&JobQuery { kind: Some("digest".into()), ..JobQuery::default() }).await.unwrap();
    assert_eq!(jobs.total, 2, "one job per occurrence");
}

/// Eight callers advance the `digest` schedule from `expected` to `next` at once; returns how many won.
async fn race_to_advance(
    store: &SharedStore,
    expected: Option<time::OffsetDateTime>,
    next: time::OffsetDateTime,
) -> usize {
    let mut contenders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        contenders.spawn(async move {
            let job = new_job("digest", 0);
            store.advance_schedule("digest", expected, next, Some(&job)).await.unwrap()
        });
    }
    let mut winners = 0;
    while let Some(won) = contenders.join_next().await {
        winners += usize::from(won.unwrap());
    }
    winners
}
