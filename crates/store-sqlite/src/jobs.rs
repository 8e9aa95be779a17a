//! The job queue in SQLite: every write, the claim included, runs in one `BEGIN IMMEDIATE`
//! transaction, so concurrent claims are serialised and never hand out the same job.

use anyhow::Context as _;
use async_trait::async_trait;
use shop::jobs::{Claim, Job, JobFailure, JobQuery, JobSort, JobState, NewJob, QueueDepth};
use shop::ports::JobRepository;
use shop::{Page, StoreError};
use sqlx::types::JsonValue;
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{corrupt, count, error, offset, parse_optional_timestamp, parse_timestamp, timestamp};
use crate::{SqliteStore, commit};

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
    priority: i64,
    state: String,
    attempts: i64,
    max_attempts: i64,
    run_at: String,
    lease_owner: Option<String>,
    lease_expires_at: Option<String>,
    last_error: Option<String>,
    unique_key: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl JobRow {
    fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            id: self.id,
            kind: self.kind,
            queue: self.queue,
            payload: self.payload,
            priority: i32::try_from(self.priority).map_err(|e| corrupt("job priority", e.to_string()))?,
            state: JobState::parse(&self.state).ok_or_else(|| corrupt("job state", self.state.clone()))?,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt("job attempts", e.to_string()))?,
            max_attempts: u32::try_from(self.max_attempts).map_err(|e| corrupt("job max_attempts", e.to_string()))?,
            run_at: parse_timestamp(&self.run_at)?,
            lease_owner: self.lease_owner,
            lease_expires_at: parse_optional_timestamp(self.lease_expires_at.as_deref())?,
            last_error: self.last_error,
            unique_key: self.unique_key,
            created_at: parse_timestamp(&self.created_at)?,
            updated_at: parse_timestamp(&self.updated_at)?,
            finished_at: parse_optional_timestamp(self.finished_at.as_deref())?,
        })
    }
}

#[derive(FromRow)]
struct QueueDepthRow {
    queue: String,
    state: String,
    count: i64,
    oldest_due: Option<String>,
}

/// SQLite names the partial unique index by its column (`jobs.unique_key`); name it as
/// PostgreSQL does.
fn job_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |sql_error| match error(context)(sql_error) {
        StoreError::Conflict { constraint } if constraint == "jobs_unique_key_key" => {
            StoreError::Conflict { constraint: "jobs_unique_key".into() }
        }
        other => other,
    }
}

fn truncate_error(message: &str) -> String {
    message.chars().take(MAX_ERROR_CHARS).collect()
}

/// Inserts a job inside the caller's transaction; `false` when a live job already has its
/// unique key (or the id exists), in which case nothing is added.
pub(crate) async fn insert_job(conn: &mut SqliteConnection, job: &NewJob) -> Result<bool, StoreError> {
    let created_at = timestamp(job.created_at);
    let result = sqlx::query(
        "insert into jobs (id, kind, queue, payload, priority, state, attempts, max_attempts, run_at, unique_key, \
         created_at, updated_at) values (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?) on conflict do nothing",
    )
    .bind(job.id)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.payload)
    .bind(i64::from(job.priority))
    .bind(i64::from(job.max_attempts))
    .bind(timestamp(job.run_at))
    .bind(job.unique_key.as_deref())
    .bind(&created_at)
    .bind(&created_at)
    .execute(conn)
    .await
    .map_err(job_error("failed to enqueue job"))?;
    Ok(result.rows_affected() == 1)
}

fn sort_claimed(jobs: &mut [Job]) {
    jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
}

#[async_trait]
impl JobRepository for SqliteStore {
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let inserted = insert_job(&mut tx, job).await?;
        commit(tx).await?;
        if inserted {
            self.announce_jobs([job.queue.as_str()]);
        }
        Ok(inserted)
    }

    async fn claim_jobs(&self, claim: &Claim) -> Result<Vec<Job>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "update jobs set state = 'running', attempts = attempts + 1, lease_owner = ?1, lease_expires_at = ?2, \
             updated_at = ?3 where id in (select id from jobs where queue = ?4 and state in ('queued', 'failed') \
             and run_at <= ?3 and (?6 is null or kind in (select value from json_each(?6))) \
             order by priority desc, run_at, id limit ?5) returning ",
            job_columns!()
        ))
        .bind(&claim.worker)
        .bind(timestamp(claim.lease_until))
        .bind(timestamp(claim.now))
        .bind(&claim.queue)
        .bind(i64::from(claim.limit))
        .bind(claim.kinds.as_ref().map(|kinds| serde_json::Value::from(kinds.clone()).to_string()))
        .fetch_all(&mut *tx)
        .await
        .map_err(job_error("failed to claim jobs"))?;
        commit(tx).await?;
        let mut jobs = rows.into_iter().map(JobRow::into_job).collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order; hand the batch out in claim order.
        sort_claimed(&mut jobs);
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
        let mut update = QueryBuilder::<Sqlite>::new("update jobs set lease_expires_at = ");
        update.push_bind(timestamp(lease_until));
        update.push(" where state = 'running' and lease_owner = ").push_bind(worker.to_owned());
        push_id_list(&mut update, ids);
        update.push(" returning id");
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let held: Vec<Uuid> =
            update.build_query_scalar().fetch_all(&mut *tx).await.map_err(job_error("failed to extend leases"))?;
        commit(tx).await?;
        Ok(held)
    }

    async fn complete_job(&self, id: Uuid, worker: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let worker = worker.to_owned();
        let updated = self
            .execute_write(
                "update jobs set state = 'succeeded', finished_at = ?1, updated_at = ?1, lease_owner = null, \
                 lease_expires_at = null where id = ?2 and state = 'running' and lease_owner = ?3",
                |q| q.bind(timestamp(now)).bind(id).bind(worker),
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
        let retry_at = failure.retry_at.map(timestamp);
        let attempt_counted = failure.attempt_counted;
        let updated = self
            .execute_write(
                "update jobs set state = case when ?1 is null then 'dead' else 'failed' end, \
                 run_at = coalesce(?1, run_at), finished_at = case when ?1 is null then ?2 end, updated_at = ?2, \
                 last_error = ?3, lease_owner = null, lease_expires_at = null, \
                 attempts = case when ?6 then attempts else max(attempts - 1, 0) end \
                 where id = ?4 and state = 'running' and lease_owner = ?5",
                |q| q.bind(retry_at).bind(timestamp(now)).bind(last_error).bind(id).bind(worker).bind(attempt_counted),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn release_jobs(&self, worker: &str, ids: &[Uuid], now: OffsetDateTime) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = timestamp(now);
        let mut update = QueryBuilder::<Sqlite>::new("update jobs set state = 'queued', run_at = ");
        update.push_bind(now.clone()).push(", updated_at = ").push_bind(now);
        update.push(", lease_owner = null, lease_expires_at = null where state = 'running' and lease_owner = ");
        update.push_bind(worker.to_owned());
        push_id_list(&mut update, ids);
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let result = update.build().execute(&mut *tx).await.map_err(job_error("failed to release jobs"))?;
        commit(tx).await?;
        Ok(result.rows_affected())
    }

    async fn recover_expired_leases(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.execute_write(
            "update jobs set state = case when attempts >= max_attempts then 'dead' else 'failed' end, \
             run_at = case when attempts >= max_attempts then run_at else ?1 end, \
             finished_at = case when attempts >= max_attempts then ?1 end, \
             last_error = ?2, lease_owner = null, lease_expires_at = null, updated_at = ?1 \
             where state = 'running' and lease_expires_at <= ?1",
            |q| q.bind(timestamp(now)).bind(LEASE_EXPIRED),
        )
        .await
    }

    async fn find_job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<JobRow> = sqlx::query_as(concat!("select ", job_columns!(), " from jobs where id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(job_error("failed to find job"))?;
        row.map(JobRow::into_job).transpose()
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Page<Job>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = QueryBuilder::<Sqlite>::new("select count(*)");
        push_job_filters(&mut count_query, query);
        let total: i64 =
            count_query.build_query_scalar().fetch_one(&mut *conn).await.map_err(job_error("failed to count jobs"))?;
        let mut select = QueryBuilder::<Sqlite>::new(concat!("select ", job_columns!()));
        push_job_filters(&mut select, query);
        select.push(match query.sort {
            JobSort::UpdatedAt => " order by jobs.updated_at desc, jobs.id desc limit ",
            JobSort::RunAt => " order by jobs.run_at asc, jobs.id asc limit ",
        });
        select.push_bind(i64::from(query.page.limit())).push(" offset ").push_bind(offset(query.page));
        let rows: Vec<JobRow> =
            select.build_query_as().fetch_all(&mut *conn).await.map_err(job_error("failed to list jobs"))?;
        let items = rows.into_iter().map(JobRow::into_job).collect::<Result<_, _>>()?;
        Ok(Page { items, total: count(total), request: query.page })
    }

    async fn retry_job(&self, id: Uuid, now: OffsetDateTime) -> Result<Job, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "update jobs set state = 'queued', attempts = 0, run_at = ?1, updated_at = ?1, finished_at = null, \
             lease_owner = null, lease_expires_at = null where id = ?2 and state in ('dead', 'failed') returning ",
            job_columns!()
        ))
        .bind(timestamp(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(job_error("failed to retry job"))?;
        let Some(row) = row else {
            let exists: Option<i64> = sqlx::query_scalar("select 1 from jobs where id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(job_error("failed to find job"))?;
            return Err(match exists {
                Some(_) => StoreError::Conflict { constraint: "jobs_state".into() },
                None => StoreError::NotFound,
            });
        };
        commit(tx).await?;
        let job = row.into_job()?;
        self.announce_jobs([job.queue.as_str()]);
        Ok(job)
    }

    async fn purge_jobs(&self, state: JobState, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            "delete from jobs where id in \
             (select id from jobs where state = ? and finished_at < ? limit ?)",
            |q| q.bind(state.as_str()).bind(timestamp(before)).bind(i64::from(limit)),
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
             min(min(case when state in ('queued', 'failed') and run_at <= ? then run_at end)) \
             over (partition by queue) end as oldest_due \
             from jobs group by queue, state order by queue, state",
        )
        .bind(timestamp(now))
        .fetch_all(&mut *conn)
        .await
        .map_err(job_error("failed to count jobs by queue"))?;
        rows.into_iter()
            .map(|row| {
                Ok(QueueDepth {
                    state: JobState::parse(&row.state).ok_or_else(|| corrupt("job state", row.state.clone()))?,
                    queue: row.queue,
                    count: count(row.count),
                    oldest_due: parse_optional_timestamp(row.oldest_due.as_deref())?,
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
        let mut tx = Self::begin_write(&mut conn).await?;
        let moved = match expected {
            None => sqlx::query("insert into job_schedules (name, next_run_at) values (?, ?) on conflict do nothing")
                .bind(name)
                .bind(timestamp(next)),
            Some(expected) => {
                sqlx::query("update job_schedules set next_run_at = ? where name = ? and next_run_at = ?")
                    .bind(timestamp(next))
                    .bind(name)
                    .bind(timestamp(expected))
            }
        }
        .execute(&mut *tx)
        .await
        .map_err(job_error("failed to advance schedule"))?
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
        self.announce_jobs(job.map(|job| job.queue.as_str()));
        Ok(true)
    }

    fn job_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.jobs_enqueued.subscribe())
    }

    async fn scheduled_at(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.connection().await?;
        let next: Option<String> = sqlx::query_scalar("select next_run_at from job_schedules where name = ?")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(job_error("failed to read schedule"))?;
        parse_optional_timestamp(next.as_deref())
    }
}

fn push_id_list(builder: &mut QueryBuilder<Sqlite>, ids: &[Uuid]) {
    builder.push(" and id in (");
    let mut separated = builder.separated(", ");
    for id in ids {
        separated.push_bind(*id);
    }
    builder.push(")");
}

fn push_job_filters(builder: &mut QueryBuilder<Sqlite>, query: &JobQuery) {
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
