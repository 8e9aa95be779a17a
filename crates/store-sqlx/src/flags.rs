//! Feature flags and the audit log: flag writes record their audit row and bump the flags'
//! generation in their own transaction; `record_audit` is the one way any write adds a row.

use async_trait::async_trait;
use shop::audit::{AuditContext, AuditEntry, AuditQuery};
use shop::flags::{Flag, FlagDefinition, FlagName, FlagWrite, MAX_FLAGS};
use shop::ports::{AuditRepository, FlagRepository};
use shop::{Conflict, Page, StoreError};
use sqlx::FromRow;
use sqlx::types::JsonValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{Timestamp, corrupt, count, error, offset};
use crate::exec::{Executor, Statement, Transaction, sql};

#[derive(FromRow)]
struct FlagRow {
    name: String,
    definition: JsonValue,
    version: i64,
    updated_at: Timestamp,
}

impl FlagRow {
    fn into_flag(self) -> Result<Flag, StoreError> {
        let name = FlagName::parse(&self.name).map_err(|problem| corrupt("flag name", problem))?;
        let definition: FlagDefinition = serde_json::from_value(self.definition)
            .map_err(|problem| corrupt("flag definition", problem.to_string()))?;
        Ok(Flag { name, definition, version: self.version, updated_at: self.updated_at.into() })
    }
}

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    at: Timestamp,
    actor: String,
    action: String,
    target: String,
    before: Option<JsonValue>,
    after: Option<JsonValue>,
    request_id: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at: row.at.into(),
            actor: row.actor,
            action: row.action,
            target: row.target,
            before: row.before,
            after: row.after,
            request_id: row.request_id,
        }
    }
}

/// A change to record: what was done to what, and the target before and after.
pub(crate) struct AuditRecord<'a> {
    pub action: &'a str,
    pub target: String,
    pub before: Option<JsonValue>,
    pub after: Option<JsonValue>,
}

/// Adds the audit row of a change inside the change's own transaction: it commits with the
/// change or not at all.
pub(crate) async fn record_audit(
    tx: &mut Transaction<'_>,
    context: &AuditContext,
    record: AuditRecord<'_>,
) -> Result<(), StoreError> {
    tx.execute(
        sql("insert into audit_log (id, at, actor, action, target, before, after, request_id) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(shop::new_id())
        .bind(context.at)
        .bind(context.actor.as_str())
        .bind(record.action)
        .bind(record.target)
        .bind(record.before)
        .bind(record.after)
        .bind(context.request_id.as_deref()),
    )
    .await
    .map_err(error("failed to record the audit entry"))?;
    Ok(())
}

fn flag_json(flag: &Flag) -> Result<JsonValue, StoreError> {
    serde_json::to_value(flag).map_err(StoreError::other)
}

async fn bump_flag_generation(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(sql("update cache_generations set generation = generation + 1 where family = 'flags' and slot = 0"))
        .await
        .map_err(error("failed to bump the flag generation"))?;
    Ok(())
}

/// Takes the flags' generation row for the rest of the transaction, so flag writes follow one
/// another on both backends: a creation sees a concurrent one's row, and the flag limit holds
/// (SQLite's write transaction excludes other writers already).
async fn serialize_flag_writes(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    let select = tx
        .dialect()
        .locking("select generation from cache_generations where family = 'flags' and slot = 0", "for update");
    let _: Option<i64> = tx
        .fetch_optional_scalar(Statement::owned(select))
        .await
        .map_err(error("failed to lock the flag generation"))?;
    Ok(())
}

async fn locked_flag(tx: &mut Transaction<'_>, name: &FlagName) -> Result<Option<Flag>, StoreError> {
    let select = tx
        .dialect()
        .locking("select name, definition, version, updated_at from feature_flags where name = $1", "for update");
    let row: Option<FlagRow> = tx
        .fetch_optional(Statement::owned(select).bind(name.as_str()))
        .await
        .map_err(error("failed to read the flag"))?;
    row.map(FlagRow::into_flag).transpose()
}

#[async_trait]
impl FlagRepository for SqlStore {
    async fn list_flags(&self) -> Result<Vec<Flag>, StoreError> {
        let mut conn = self.connection().await?;
        let rows: Vec<FlagRow> = conn
            .fetch_all(
                sql("select name, definition, version, updated_at from feature_flags order by name limit $1")
                    .bind(MAX_FLAGS as i64),
            )
            .await
            .map_err(error("failed to list the flags"))?;
        rows.into_iter().map(FlagRow::into_flag).collect()
    }

    async fn find_flag(&self, name: &FlagName) -> Result<Option<Flag>, StoreError> {
        let mut conn = self.connection().await?;
        let row: Option<FlagRow> = conn
            .fetch_optional(
                sql("select name, definition, version, updated_at from feature_flags where name = $1")
                    .bind(name.as_str()),
            )
            .await
            .map_err(error("failed to read the flag"))?;
        row.map(FlagRow::into_flag).transpose()
    }

    async fn flag_generation(&self) -> Result<i64, StoreError> {
        let mut conn = self.connection().await?;
        conn.fetch_scalar(sql("select generation from cache_generations where family = 'flags' and slot = 0"))
            .await
            .map_err(error("failed to read the flag generation"))
    }

    async fn put_flag(&self, write: &FlagWrite, audit: &AuditContext) -> Result<(Option<Flag>, Flag), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        serialize_flag_writes(&mut tx).await?;
        let before = locked_flag(&mut tx, &write.name).await?;
        let current_version = before.as_ref().map(|flag| flag.version);
        if write.expected_version.is_some() && write.expected_version != current_version {
            tx.roll_back().await?;
            return Err(StoreError::Conflict(Conflict::FlagChanged));
        }
        let definition = serde_json::to_value(&write.definition).map_err(StoreError::other)?;
        let after = Flag {
            name: write.name.clone(),
            definition: write.definition.clone(),
            version: current_version.map_or(1, |version| version + 1),
            updated_at: write.now,
        };
        match before {
            Some(_) => {
                tx.execute(
                    sql("update feature_flags set definition = $1, version = $2, updated_at = $3 where name = $4")
                        .bind(definition)
                        .bind(after.version)
                        .bind(write.now)
                        .bind(write.name.as_str()),
                )
                .await
                .map_err(error("failed to update the flag"))?;
            }
            None => {
                let defined: i64 = tx
                    .fetch_scalar(sql("select count(*) from feature_flags"))
                    .await
                    .map_err(error("failed to count the flags"))?;
                if count(defined) >= MAX_FLAGS as u64 {
                    tx.roll_back().await?;
                    return Err(StoreError::Conflict(Conflict::FlagLimit));
                }
                tx.execute(
                    sql("insert into feature_flags (name, definition, version, updated_at) values ($1, $2, $3, $4)")
                        .bind(write.name.as_str())
                        .bind(definition)
                        .bind(after.version)
                        .bind(write.now),
                )
                .await
                .map_err(error("failed to create the flag"))?;
            }
        }
        bump_flag_generation(&mut tx).await?;
        let record = AuditRecord {
            action: if before.is_some() { "flag.update" } else { "flag.create" },
            target: format!("flag:{}", write.name),
            before: before.as_ref().map(flag_json).transpose()?,
            after: Some(flag_json(&after)?),
        };
        record_audit(&mut tx, audit, record).await?;
        tx.commit().await?;
        Ok((before, after))
    }

    async fn delete_flag(
        &self,
        name: &FlagName,
        expected_version: Option<i64>,
        audit: &AuditContext,
    ) -> Result<Flag, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        serialize_flag_writes(&mut tx).await?;
        let Some(before) = locked_flag(&mut tx, name).await? else {
            tx.roll_back().await?;
            return Err(StoreError::NotFound);
        };
        if expected_version.is_some_and(|expected| expected != before.version) {
            tx.roll_back().await?;
            return Err(StoreError::Conflict(Conflict::FlagChanged));
        }
        tx.execute(sql("delete from feature_flags where name = $1").bind(name.as_str()))
            .await
            .map_err(error("failed to delete the flag"))?;
        bump_flag_generation(&mut tx).await?;
        let record = AuditRecord {
            action: "flag.delete",
            target: format!("flag:{name}"),
            before: Some(flag_json(&before)?),
            after: None,
        };
        record_audit(&mut tx, audit, record).await?;
        tx.commit().await?;
        Ok(before)
    }
}

fn push_audit_filters(statement: &mut Statement, query: &AuditQuery) {
    statement.push(" where 1 = 1");
    if let Some(action) = &query.action {
        match action.strip_suffix('.') {
            // A prefix: `flag.` is every flag action. Compared as a range, so no LIKE escaping.
            Some(prefix) => {
                statement.push(" and action >= ").push_bind(format!("{prefix}."));
                statement.push(" and action < ").push_bind(format!("{prefix}/"));
            }
            None => {
                statement.push(" and action = ").push_bind(action.as_str());
            }
        }
    }
    if let Some(actor) = &query.actor {
        statement.push(" and actor = ").push_bind(actor.as_str());
    }
    if let Some(target) = &query.target {
        statement.push(" and target = ").push_bind(target.as_str());
    }
    if let Some(since) = query.since {
        statement.push(" and at >= ").push_bind(since);
    }
}

#[async_trait]
impl AuditRepository for SqlStore {
    async fn record_action(
        &self,
        context: &AuditContext,
        action: &str,
        target: &str,
        before: Option<JsonValue>,
        after: Option<JsonValue>,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.begin_write().await?;
        record_audit(&mut tx, context, AuditRecord { action, target: target.to_owned(), before, after }).await?;
        tx.commit().await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let mut conn = self.connection().await?;
        let mut count_query = sql("select count(*) from audit_log");
        push_audit_filters(&mut count_query, query);
        let total: i64 = conn.fetch_scalar(count_query).await.map_err(error("failed to count audit entries"))?;
        let mut select = sql("select id, at, actor, action, target, before, after, request_id from audit_log");
        push_audit_filters(&mut select, query);
        select.push(" order by at desc, id desc limit ").push_bind(query.page.limit());
        select.push(" offset ").push_bind(offset(query.page));
        let rows: Vec<AuditRow> = conn.fetch_all(select).await.map_err(error("failed to list audit entries"))?;
        Ok(Page { items: rows.into_iter().map(AuditEntry::from).collect(), total: count(total), request: query.page })
    }

    async fn purge_audit(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.execute_write(
            sql("delete from audit_log where id in (select id from audit_log where at < $1 limit $2)")
                .bind(before)
                .bind(limit),
        )
        .await
    }
}
