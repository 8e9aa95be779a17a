//! Cost of one feature-flag evaluation from the in-memory snapshot (target: at most 1 µs):
//! `cargo bench -p shop --bench flags`. The snapshot is loaded once from a fixed list (the
//! repository is never read while evaluating, which is the point).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use shop::StoreError;
use shop::accounts::Role;
use shop::audit::AuditContext;
use shop::flags::{
    Attribute, Condition, Flag, FlagContext, FlagDefinition, FlagKind, FlagName, FlagService, FlagValue, FlagWrite,
    Rule,
};
use shop::ports::FlagRepository;
use uuid::Uuid;

/// The flags, as a database would hand them to the snapshot.
struct Loaded(Vec<Flag>);

#[async_trait::async_trait]
impl FlagRepository for Loaded {
    async fn list_flags(&self) -> Result<Vec<Flag>, StoreError> {
        Ok(self.0.clone())
    }
    async fn find_flag(&self, name: &FlagName) -> Result<Option<Flag>, StoreError> {
        Ok(self.0.iter().find(|flag| &flag.name == name).cloned())
    }
    async fn flag_generation(&self) -> Result<i64, StoreError> {
        Ok(1)
    }
    async fn put_flag(&self, _: &FlagWrite, _: &AuditContext) -> Result<(Option<Flag>, Flag), StoreError> {
        Err(StoreError::other("read-only"))
    }
    async fn delete_flag(&self, _: &FlagName, _: Option<i64>, _: &AuditContext) -> Result<Flag, StoreError> {
        Err(StoreError::other("read-only"))
    }
}

fn flag(name: &str, enabled: bool, rules: Vec<Rule>) -> Flag {
    Flag {
        name: FlagName::parse(name).unwrap(),
        definition: FlagDefinition {
            description: String::new(),
            kind: FlagKind::Boolean,
            variants: vec![],
            enabled,
            default: FlagValue::Bool(false),
            rules,
        },
        version: 1,
        updated_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn evaluation(c: &mut Criterion) {
    let denied: Vec<Uuid> = (0..1_000u128).map(Uuid::from_u128).collect();
    let rules = vec![
        Rule { when: vec![Condition::Users { ids: denied }], then: FlagValue::Bool(false) },
        Rule { when: vec![Condition::Roles { roles: vec!["admin".into()] }], then: FlagValue::Bool(true) },
        Rule {
            when: vec![Condition::Attribute { name: Attribute::Country, values: vec!["DE".into(), "AT".into()] }],
            then: FlagValue::Bool(true),
        },
        Rule { when: vec![Condition::Rollout { percentage: 30, group_id: None }], then: FlagValue::Bool(true) },
    ];
    let mut flags: Vec<Flag> = (0..200).map(|n| flag(&format!("flag_{n}"), true, vec![])).collect();
    flags.push(flag("new_checkout", true, rules));
    flags.push(flag("maintenance", false, vec![]));
    let service = FlagService::new(Arc::new(Loaded(flags)));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(service.refresh()).unwrap();

    let user = FlagContext {
        user_id: Some(Uuid::from_u128(123_456_789)),
        role: Some(Role::Customer),
        country: Some("fr"),
        ..FlagContext::default()
    };
    let visitor = FlagContext { guest: true, anonymous_id: Some("203.0.113.7"), ..FlagContext::default() };
    c.bench_function("flag: kill switch off", |b| {
        b.iter(|| black_box(service.is_enabled(black_box("maintenance"), &user, false)))
    });
    c.bench_function("flag: not defined (the caller's default)", |b| {
        b.iter(|| black_box(service.is_enabled(black_box("signups"), &user, true)))
    });
    c.bench_function("flag: 4 rules, 1000-id deny list, user rollout", |b| {
        b.iter(|| black_box(service.is_enabled(black_box("new_checkout"), black_box(&user), false)))
    });
    c.bench_function("flag: 4 rules, anonymous rollout", |b| {
        b.iter(|| black_box(service.is_enabled(black_box("new_checkout"), black_box(&visitor), false)))
    });
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
