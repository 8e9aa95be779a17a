//! The job queue. A claim takes a batch in one statement: on PostgreSQL its sub-select locks
//! the rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers take disjoint batches without
//! waiting for each other; on SQLite it runs inside `BEGIN IMMEDIATE`, so concurrent claims are
//! serialised and never hand out the same job. Every insert of a job wakes workers at commit:
//! `pg_notify('shopkeep_jobs', queue)` in the transaction on PostgreSQL, an in-process
//! announcement after the commit on SQLite (see `SqlStore::announce_jobs`).

use async_trait::async_trait;
use shop::jobs::{Claim, Job, JobFailure, JobQuery, JobSort, JobState, NewJob, QueueDepth};
use shop::ports::JobRepository;
use shop::{Conflict, Page, StoreError};
use sqlx::FromRow;
use sqlx::types::JsonValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, count, error, offset, optional};
use crate::dialect::Dialect;
use crate::exec::{Executor as _, Statement, Transaction, sql};
use crate::postgres::JOBS_CHANNEL;

/// The error recorded on a job whose worker stopped without finishing it.
const LEASE_EXPIRED: &str = "lease expired: the worker stopped without finishing the job";

/// The longest `last_error` kept, in characters.
const MAX_ERROR_CHARS: usize = 2000;

macro_rules! job_columns {
    () => {
        "jobs.id, jobs.kind, jobs.queue, jobs.payload, jobs.priority, jobs.state, jobs.attempts, jobs.max_attempts, \
         jobs.run_at, jobs.lease_owner, jobs.lease_expires_at, jobs.last_error, jobs.unique_key, jobs.created_at, \
         jobs.updated_at, jobs.finished_at"
    };
}

#[derive(FromRow)]
struct JobRow {
    id: Uuid,
    kind: String,
    queue: String,
    payload: JsonValue,
    priority: i32,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_at: Timestamp,
    lease_owner: Option<String>,
    lease_expires_at: Option<Timestamp>,
    last_error: Option<String>,
    unique_key: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    finished_at: Option<Timestamp>,
}

impl JobRow {
    fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            id: self.id,
            kind: self.kind,
            queue: self.queue,
            payload: self.payload,
            priority: self.priority,
            state: JobState::parse(&self.state).ok_or_else(|| corrupt("job state", self.state.clone()))?,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt("job attempts", e.to_string()))?,
            max_attempts: u32::try_from(self.max_attempts).map_err(|e| corrupt("job max_attempts", e.to_string()))?,
            run_at: self.run_at.into(),
            lease_owner: self.lease_owner,
            lease_expires_at: optional(self.lease_expires_at),
            last_error: self.last_error,
            unique_key: self.unique_key,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            finished_at: optional(self.finished_at),
        })
    }
}

#[derive(FromRow)]
struct QueueDepthRow {
    queue: String,
    state: String,
    count: i64,
    oldest_due: Option<Timestamp>,
}

fn truncate_error(message: &str) -> String {
    message.chars().take(MAX_ERROR_CHARS).collect()
}

/// Inserts a job inside the caller's transaction and, when it was added, wakes workers at
/// commit (see [`notify_workers`]). `false` when a live job already has its unique key (or the
/// id exists), in which case nothing is added.
pub(crate) async fn insert_job(tx: &mut Transaction<'_>, job: &NewJob) -> Result<bool, StoreError> {
    let inserted = tx
        .execute(
            sql("insert into jobs (id, kind, queue, payload, priority, state, attempts, max_attempts, run_at, \
                 unique_key, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $9) on conflict do nothing")
            .bind(job.id)
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(job.payload.clone())
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(job.run_at)
            .bind(job.unique_key.as_deref())
            .bind(job.created_at),
        )
        .await
        .map_err(error("failed to enqueue job"))?
        == 1;
    if inserted {
        notify_workers(tx, &job.queue).await?;
    }
    Ok(inserted)
}

/// On PostgreSQL, wakes the workers listening for `queue` when the surrounding transaction
/// commits (not at all if it rolls back). SQLite cannot notify: the store announces the queue
/// in process after the commit instead.
async fn notify_workers(tx: &mut Transaction<'_>, queue: &str) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute(sql("select pg_notify($1, $2)").bind(JOBS_CHANNEL).bind(queue))
            .await
            .map_err(error("failed to notify workers"))?;
    }
    Ok(())
}

#[async_trait]
impl JobRepository for SqlStore {
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let inserted = insert_job(&mut tx, job).await?;
        tx.commit().await?;
        if inserted {
            self.announce_jobs([job.queue.as_str()]);
        }
        Ok(inserted)
    }

    async fn claim_jobs(&self, claim: &Claim) -> Result<Vec<Job>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        // Materialised so the (locking) sub-select runs exactly once: the batch is what it picked.
        let mut statement = Statement::owned(
            "with picked as materialized (select id from jobs where queue = $1 and state in ('queued', 'failed') \
             and run_at <= $2"
                .to_owned(),
        )
        .bind(&claim.queue)
        .bind(claim.now)
        .bind(claim.limit)
        .bind(&claim.worker)
        .bind(claim.lease_until);
        if let Some(kinds) = &claim.kinds {
            statement.push(" and kind in ").push_list(kinds);
        }
        statement
            .push(" order by priority desc, run_at, id limit $3 ")
            .push(self.dialect().row_lock("for update skip locked"))
            .push(
                ") update jobs set state = 'running', attempts = jobs.attempts + 1, lease_owner = $4, \
                 lease_expires_at = $5, updated_at = $2 from picked where jobs.id = picked.id returning ",
            )
            .push(job_columns!());
        let rows: Vec<JobRow> = self.write_returning(statement, "failed to claim jobs").await?;
        let mut jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order; hand the batch out in claim order.
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    async fn extend_leases(
        &self,
        worker: &str,
        ids: &[Uuid],
        lease_until: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut update = Statement::owned(
            "update jobs set lease_expires_at = $1 where state = 'running' and lease_owner = $2".into(),
        )
        .bind(lease_until)
        .bind(worker);
        update.push(" and id in ").push_list(ids).push(" returning id");
        let held: Vec<(Uuid,)> = self.write_returning(update, "failed to extend leases").await?;
        Ok(held.into_iter().map(|(id,)| id).collect())
    }

    async fn complete_job(&self, id: Uuid, worker: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let updated = self
            .execute_write(
                sql("update jobs set state = 'succeeded', finished_at = $1, updated_at = $1, lease_owner = null, \
                     lease_expires_at = null where id = $2 and state = 'running' and lease_owner = $3")
                .bind(now)
                .bind(id)
                .bind(worker),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn fail_job(
        &self,
        id: Uuid,
        worker: &str,
        failure: &JobFailure,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let updated = self
            .execute_write(
                sql("update jobs set state = case when $1 is null then 'dead' else 'failed' end, \
                     run_at = coalesce($1, run_at), finished_at = case when $1 is null then $2 end, \
                     updated_at = $2, last_error = $3, lease_owner = null, lease_expires_at = null, \
                     attempts = case when $6 or attempts = 0 then attempts else attempts - 1 end \
                     where id = $4 and state = 'running' and lease_owner = $5")
                .bind(failure.retry_at)
                .bind(now)
                .bind(truncate_error(&failure.error))
                .bind(id)
                .bind(worker)
                .bind(failure.attempt_counted),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn release_jobs(&self, worker: &str, ids: &[Uuid], now: OffsetDateTime) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut update = Statement::owned(
            "update jobs set state = 'queued', run_at = $1, updated_at = $1, lease_owner = null, \
             lease_expires_at = null where state = 'running' and lease_owner = $2"
                .into(),
        )
        .bind(now)
        .bind(worker);
        update.push(" and id in ").push_list(ids);
        self.execute_write(update).await
    }

    async fn recover_expired_leases(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.execute_write(
            sql("update jobs set state = case when attempts >= max_attempts then 'dead' else 'failed' end, \
                 run_at = case when attempts >= max_attempts then run_at else $1 end, \
                 finished_at = case when attempts >= max_attempts then $1 end, \
                 last_error = $2, lease_owner = null, lease_expires_at = null, updated_at = $1 \
                 where state = 'running' and lease_expires_at <= $1")
            .bind(now)
            .bind(LEASE_EXPIRED),
        )
        .await
    }

    async fn find_job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<JobRow> = conn
            .fetch_optional(sql(concat!("select ", job_columns!(), " from jobs where id = $1")).bind(id))
            .await
            .map_err(error("failed to find job"))?;
        row.map(JobRow::into_job).transpose()
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Page<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let total: i64 =
            conn.fetch_scalar(job_filters("select count(*)", query)).await.map_err(error("failed to count jobs"))?;
        let mut select = job_filters(concat!("select ", job_columns!()), query);
        select.push(match query.sort {
            JobSort::UpdatedAt => " order by jobs.updated_at desc, jobs.id desc limit ",
            JobSort::RunAt => " order by jobs.run_at asc, jobs.id asc limit ",
        });
        select.push_bind(query.page.limit()).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<JobRow> = conn.fetch_all(select).await.map_err(error("failed to list jobs"))?;
        let items = rows.into_iter().map(JobRow::into_job).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn retry_job(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        audit: &shop::audit::AuditContext,
    ) -> Result<Job, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        let before: Option<(String, i32)> = tx
            .fetch_optional(
                Statement::owned(
                    tx.dialect().locking("select cast(state as text), attempts from jobs where id = $1", "for update"),
                )
                .bind(id),
            )
            .await
            .map_err(error("failed to read job"))?;
        let row: Option<JobRow> = tx
            .fetch_optional(
                sql(concat!(
                    "update jobs set state = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = null, \
                     lease_owner = null, lease_expires_at = null where id = $2 and state in ('dead', 'failed') \
                     returning ",
                    job_columns!()
                ))
                .bind(now)
                .bind(id),
            )
            .await
            .map_err(error("failed to retry job"))?;
        let Some(row) = row else {
            let exists: Option<i32> = tx
                .fetch_optional_scalar(sql("select 1 from jobs where id = $1").bind(id))
                .await
                .map_err(error("failed to find job"))?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(Conflict::JobState),
                None => StoreError::NotFound,
            });
        };
        notify_workers(&mut tx, &row.queue).await?;
        let record = crate::flags::AuditRecord {
            action: "job.retry",
            target: format!("job:{id}"),
            before: before.map(|(state, attempts)| serde_json::json!({ "state": state, "attempts": attempts })),
            after: Some(
                serde_json::json!({ "state": "queued", "attempts": 0, "kind": &row.kind, "queue": &row.queue }),
            ),
        };
        crate::flags::record_audit(&mut tx, audit, record).await?;
        tx.commit().await?;
        let job = row.into_job()?;
        self.announce_jobs([job.queue.as_str()]);
        Ok(job)
    }

    async fn purge_jobs(&self, state: JobState, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from jobs where id in (select id from jobs where state = $1 and finished_at < $2 limit $3)")
                .bind(state.as_str())
                .bind(before)
                .bind(limit),
        )
        .await
    }

    async fn queue_depths(&self, now: OffsetDateTime) -> Result<Vec<QueueDepth>, StoreError> {
        let mut conn = self.connection().await?;
        // The window over the grouped rows spreads each queue's oldest due run_at to its
        // queued and failed rows.
        let rows: Vec<QueueDepthRow> = conn
            .fetch_all(
                sql("select queue, state, count(*) as count, \
                     case when state in ('queued', 'failed') then \
                     min(min(case when state in ('queued', 'failed') and run_at <= $1 then run_at end)) \
                     over (partition by queue) end as oldest_due \
                     from jobs group by queue, state order by queue, state")
                .bind(now),
            )
            .await
            .map_err(error("failed to count jobs by queue"))?;
        rows.into_iter()
            .map(|row| {
                Ok(QueueDepth {
                    state: JobState::parse(&row.state).ok_or_else(|| corrupt("job state", row.state.clone()))?,
                    queue: row.queue,
                    count: count(row.count),
                    oldest_due: optional(row.oldest_due),
                })
            })
            .collect()
    }

    async fn advance_schedule(
        &self,
        name: &str,
        expected: Option<OffsetDateTime>,
        next: OffsetDateTime,
        job: Option<&NewJob>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        // On PostgreSQL a competitor's uncommitted move blocks this statement until it commits;
        // the row it then sees no longer matches (or already exists), so exactly one caller wins.
        // On SQLite the competitor waits for this transaction's write lock.
        let move_schedule = match expected {
            None => sql("insert into job_schedules (name, next_run_at) values ($1, $2) on conflict do nothing")
                .bind(name)
                .bind(next),
            Some(expected) => sql("update job_schedules set next_run_at = $2 where name = $1 and next_run_at = $3")
                .bind(name)
                .bind(next)
                .bind(expected),
        };
        let moved = tx.execute(move_schedule).await.map_err(error("failed to advance schedule"))? == 1;
        if !moved {
            tx.roll_back().await?;
            return Ok(false);
        }
        if let Some(job) = job {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        self.announce_jobs(job.map(|job| job.queue.as_str()));
        Ok(true)
    }

    async fn scheduled_at(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.connection().await?;
        let next: Option<Timestamp> = conn
            .fetch_optional_scalar(sql("select next_run_at from job_schedules where name = $1").bind(name))
            .await
            .map_err(error("failed to read schedule"))?;
        Ok(optional(next))
    }

    fn job_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        // PostgreSQL's workers LISTEN instead (see `listen_for_jobs`).
        (self.dialect() == Dialect::Sqlite).then(|| self.jobs_enqueued.subscribe())
    }
}

/// `select_list` over the jobs that `query` filters (no order, no page).
fn job_filters(select_list: &str, query: &JobQuery) -> Statement {
    let mut statement = Statement::owned(format!("{select_list} from jobs where 1 = 1"));
    if let Some(state) = query.state {
        statement.push(" and jobs.state = ").push_bind(state.as_str());
    }
    if let Some(queue) = &query.queue {
        statement.push(" and jobs.queue = ").push_bind(queue);
    }
    if let Some(kind) = &query.kind {
        statement.push(" and jobs.kind = ").push_bind(kind);
    }
    statement
}
