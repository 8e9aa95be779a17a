//! The job queue in PostgreSQL: claims lock their rows with `FOR UPDATE SKIP LOCKED`, so
//! concurrent workers take disjoint batches without waiting for each other, and every insert of
//! a job notifies `shopkeep_jobs` (with the queue as payload) so a listening worker wakes at commit.

use anyhow::Context as _;
use async_trait::async_trait;
use shop::jobs::{Claim, Job, JobFailure, JobQuery, JobSort, JobState, NewJob, QueueDepth};
use shop::ports::JobRepository;
use shop::{Page, StoreError};
use sqlx::types::JsonValue;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::codec::{corrupt, count, error, offset};

/// The notification channel a worker listens on; the payload is the queue's name.
pub(crate) const JOBS_CHANNEL: &str = "shopkeep_jobs";

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
    run_at: OffsetDateTime,
    lease_owner: Option<String>,
    lease_expires_at: Option<OffsetDateTime>,
    last_error: Option<String>,
    unique_key: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
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
            run_at: self.run_at,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            last_error: self.last_error,
            unique_key: self.unique_key,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

#[derive(FromRow)]
struct QueueDepthRow {
    queue: String,
    state: String,
    count: i64,
    oldest_due: Option<OffsetDateTime>,
}

fn truncate_error(message: &str) -> String {
    message.chars().take(MAX_ERROR_CHARS).collect()
}

/// Inserts a job inside the caller's transaction and, when it was added, notifies listening
/// workers (delivered at commit, not at all on rollback). `false` when a live job already has
/// its unique key (or the id exists), in which case nothing is added.
pub(crate) async fn insert_job(conn: &mut PgConnection, job: &NewJob) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "insert into jobs (id, kind, queue, payload, priority, state, attempts, max_attempts, run_at, unique_key, \
         created_at, updated_at) values ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $9) on conflict do nothing",
    )
    .bind(job.id)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
    .bind(job.run_at)
    .bind(job.unique_key.as_deref())
    .bind(job.created_at)
    .execute(&mut *conn)
    .await
    .map_err(error("failed to enqueue job"))?
    .rows_affected()
        == 1;
    if inserted {
        notify(conn, &job.queue).await?;
    }
    Ok(inserted)
}

/// Wakes the workers listening for `queue` when the surrounding transaction commits.
async fn notify(conn: &mut PgConnection, queue: &str) -> Result<(), StoreError> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(JOBS_CHANNEL)
        .bind(queue)
        .execute(conn)
        .await
        .map_err(error("failed to notify workers"))?;
    Ok(())
}

/// A transaction on a pooled connection.
type PgTransaction<'c> = sqlx::Transaction<'c, Postgres>;

pub(crate) async fn begin(conn: &mut PgConnection) -> Result<PgTransaction<'_>, StoreError> {
    sqlx::Connection::begin(conn).await.context("failed to begin a transaction").map_err(StoreError::other)
}

pub(crate) async fn commit(tx: PgTransaction<'_>) -> Result<(), StoreError> {
    tx.commit().await.context("failed to commit").map_err(StoreError::other)
}

/// Ends a transaction that found nothing to do, releasing its locks now rather than when the
/// connection is next used.
pub(crate) async fn roll_back(tx: PgTransaction<'_>) -> Result<(), StoreError> {
    tx.rollback().await.context("failed to roll back").map_err(StoreError::other)
}

#[async_trait]
impl JobRepository for PostgresStore {
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = begin(&mut conn).await?;
        let inserted = insert_job(&mut tx, job).await?;
        commit(tx).await?;
        Ok(inserted)
    }

    async fn claim_jobs(&self, claim: &Claim) -> Result<Vec<Job>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        // Materialised so the locking sub-select runs exactly once: the batch is what it locked.
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "with picked as materialized (select id from jobs where queue = $1 and state in ('queued', 'failed') \
             and run_at <= $2 and ($6::text[] is null or kind = any($6)) order by priority desc, run_at, id limit $3 for update skip locked) \
             update jobs set state = 'running', attempts = jobs.attempts + 1, lease_owner = $4, \
             lease_expires_at = $5, updated_at = $2 from picked where jobs.id = picked.id returning ",
            job_columns!()
        ))
        .bind(&claim.queue)
        .bind(claim.now)
        .bind(i64::from(claim.limit))
        .bind(&claim.worker)
        .bind(claim.lease_until)
        .bind(claim.kinds.clone())
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to claim jobs"))?;
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
        let mut conn = self.connection().await?;
        sqlx::query_scalar(
            "update jobs set lease_expires_at = $1 where state = 'running' and lease_owner = $2 and id = any($3) \
             returning id",
        )
        .bind(lease_until)
        .bind(worker)
        .bind(ids.to_vec())
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to extend leases"))
    }

    async fn complete_job(&self, id: Uuid, worker: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let worker = worker.to_owned();
        let updated = self
            .execute(
                "update jobs set state = 'succeeded', finished_at = $1, updated_at = $1, lease_owner = null, \
                 lease_expires_at = null where id = $2 and state = 'running' and lease_owner = $3",
                |q| q.bind(now).bind(id).bind(worker),
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
        let worker = worker.to_owned();
        let last_error = truncate_error(&failure.error);
        let retry_at = failure.retry_at;
        let attempt_counted = failure.attempt_counted;
        let updated = self
            .execute(
                "update jobs set state = case when $1::timestamptz is null then 'dead' else 'failed' end, \
                 run_at = coalesce($1, run_at), finished_at = case when $1::timestamptz is null then $2 end, \
                 updated_at = $2, last_error = $3, lease_owner = null, lease_expires_at = null, \
                 attempts = case when $6 then attempts else greatest(attempts - 1, 0) end \
                 where id = $4 and state = 'running' and lease_owner = $5",
                |q| q.bind(retry_at).bind(now).bind(last_error).bind(id).bind(worker).bind(attempt_counted),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn release_jobs(&self, worker: &str, ids: &[Uuid], now: OffsetDateTime) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let worker = worker.to_owned();
        let ids = ids.to_vec();
        self.execute(
            "update jobs set state = 'queued', run_at = $1, updated_at = $1, lease_owner = null, \
             lease_expires_at = null where state = 'running' and lease_owner = $2 and id = any($3)",
            |q| q.bind(now).bind(worker).bind(ids),
        )
        .await
    }

    async fn recover_expired_leases(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.execute(
            "update jobs set state = case when attempts >= max_attempts then 'dead' else 'failed' end, \
             run_at = case when attempts >= max_attempts then run_at else $1 end, \
             finished_at = case when attempts >= max_attempts then $1 end, \
             last_error = $2, lease_owner = null, lease_expires_at = null, updated_at = $1 \
             where state = 'running' and lease_expires_at <= $1",
            |q| q.bind(now).bind(LEASE_EXPIRED),
        )
        .await
    }

    async fn find_job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<JobRow> = sqlx::query_as(concat!("select ", job_columns!(), " from jobs where id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to find job"))?;
        row.map(JobRow::into_job).transpose()
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Page<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = QueryBuilder::<Postgres>::new("select count(*)");
        push_job_filters(&mut count_query, query);
        let total: i64 =
            count_query.build_query_scalar().fetch_one(&mut *conn).await.map_err(error("failed to count jobs"))?;
        let mut select = QueryBuilder::<Postgres>::new(concat!("select ", job_columns!()));
        push_job_filters(&mut select, query);
        select.push(match query.sort {
            JobSort::UpdatedAt => " order by jobs.updated_at desc, jobs.id desc limit ",
            JobSort::RunAt => " order by jobs.run_at asc, jobs.id asc limit ",
        });
        select.push_bind(i64::from(query.page.limit())).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<JobRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(error("failed to list jobs"))?;
        let items = rows.into_iter().map(JobRow::into_job).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn retry_job(&self, id: Uuid, now: OffsetDateTime) -> Result<Job, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = begin(&mut conn).await?;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "update jobs set state = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = null, \
             lease_owner = null, lease_expires_at = null where id = $2 and state in ('dead', 'failed') returning ",
            job_columns!()
        ))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("failed to retry job"))?;
        let Some(row) = row else {
            let exists: Option<i32> = sqlx::query_scalar("select 1 from jobs where id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(error("failed to find job"))?;
            return Err(match exists {
                Some(_) => StoreError::Conflict { constraint: "jobs_state".into() },
                None => StoreError::NotFound,
            });
        };
        notify(&mut tx, &row.queue).await?;
        commit(tx).await?;
        row.into_job()
    }

    async fn purge_jobs(&self, state: JobState, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute(
            "delete from jobs where id in \
             (select id from jobs where state = $1 and finished_at < $2 limit $3)",
            |q| q.bind(state.as_str()).bind(before).bind(i64::from(limit)),
        )
        .await
    }

    async fn queue_depths(&self, now: OffsetDateTime) -> Result<Vec<QueueDepth>, StoreError> {
        let mut conn = self.connection().await?;
        // The window over the grouped rows spreads each queue's oldest due run_at to its
        // queued and failed rows.
        let rows: Vec<QueueDepthRow> = sqlx::query_as(
            "select queue, state, count(*) as count, \
             case when state in ('queued', 'failed') then \
             min(min(run_at) filter (where state in ('queued', 'failed') and run_at <= $1)) \
             over (partition by queue) end as oldest_due \
             from jobs group by queue, state order by queue, state",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(error("failed to count jobs by queue"))?;
        rows.into_iter()
            .map(|row| {
                Ok(QueueDepth {
                    state: JobState::parse(&row.state).ok_or_else(|| corrupt("job state", row.state.clone()))?,
                    queue: row.queue,
                    count: count(row.count),
                    oldest_due: row.oldest_due,
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
        let mut tx = begin(&mut conn).await?;
        // A competitor's uncommitted move blocks this statement until it commits; the row it
        // then sees no longer matches (or already exists), so exactly one caller wins.
        let moved = match expected {
            None => sqlx::query("insert into job_schedules (name, next_run_at) values ($1, $2) on conflict do nothing")
                .bind(name)
                .bind(next),
            Some(expected) => {
                sqlx::query("update job_schedules set next_run_at = $2 where name = $1 and next_run_at = $3")
                    .bind(name)
                    .bind(next)
                    .bind(expected)
            }
        }
        .execute(&mut *tx)
        .await
        .map_err(error("failed to advance schedule"))?
        .rows_affected()
            == 1;
        if !moved {
            tx.rollback().await.context("failed to roll back").map_err(StoreError::other)?;
            return Ok(false);
        }
        if let Some(job) = job {
            insert_job(&mut tx, job).await?;
        }
        commit(tx).await?;
        Ok(true)
    }

    async fn scheduled_at(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.connection().await?;
        sqlx::query_scalar("select next_run_at from job_schedules where name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(error("failed to read schedule"))
    }
}

fn push_job_filters(builder: &mut QueryBuilder<Postgres>, query: &JobQuery) {
    builder.push(" from jobs where 1 = 1");
    if let Some(state) = query.state {
        builder.push(" and jobs.state = ").push_bind(state.as_str());
    }
    if let Some(queue) = &query.queue {
        builder.push(" and jobs.queue = ").push_bind(queue.clone());
    }
    if let Some(kind) = &query.kind {
        builder.push(" and jobs.kind = ").push_bind(kind.clone());
    }
}
