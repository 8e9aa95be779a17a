//! Contract cases for feature flags and the audit log: versioned, conditional writes that each
//! record their audit row and move the flags' generation; nothing recorded for a refused write;
//! one winner between concurrent creations; audit filters, paging and purges.

use shop::audit::{AuditContext, AuditQuery};
use shop::flags::{FlagDefinition, FlagKind, FlagName, FlagValue, FlagWrite};
use shop::{Conflict, PageRequest, StoreError};

use crate::{SharedStore, at};

fn definition(enabled: bool) -> FlagDefinition {
    FlagDefinition {
        description: "test flag".into(),
        kind: FlagKind::Boolean,
        variants: vec![],
        enabled,
        default: FlagValue::Bool(true),
        rules: vec![],
    }
}

/// A write of `name` at `at(seconds)`.
pub fn flag_write(name: &str, enabled: bool, expected_version: Option<i64>, seconds: i64) -> FlagWrite {
    FlagWrite {
        name: FlagName::parse(name).unwrap(),
        definition: definition(enabled),
        expected_version,
        now: at(seconds),
    }
}

fn operator(actor: &str, seconds: i64) -> AuditContext {
    AuditContext::new(actor, Some(format!("request-{seconds}")), at(seconds))
}

fn all_entries() -> AuditQuery {
    AuditQuery { page: PageRequest::new(Some(1), Some(100)).unwrap(), ..AuditQuery::default() }
}

pub async fn flags_round_trip_with_versions_and_audit(store: SharedStore) {
    assert!(store.list_flags().await.unwrap().is_empty());
    let generation = store.flag_generation().await.unwrap();

    let (before, created) =
        store.put_flag(&flag_write("maintenance", false, None, 0), &operator("alice", 0)).await.unwrap();
    assert_eq!((before, created.version, created.updated_at), (None, 1, at(0)));
    assert_eq!(store.find_flag(&created.name).await.unwrap(), Some(created.clone()));
    let after_create = store.flag_generation().await.unwrap();
    assert_ne!(after_create, generation, "a write moves the generation");

    let (before, updated) =
        store.put_flag(&flag_write("maintenance", true, Some(1), 10), &operator("bob", 10)).await.unwrap();
    assert_eq!(before, Some(created.clone()));
    assert_eq!((updated.version, updated.definition.enabled, updated.updated_at), (2, true, at(10)));
    assert_ne!(store.flag_generation().await.unwrap(), after_create);

    let entries = store.list_audit(&all_entries()).await.unwrap();
    assert_eq!(entries.total, 2);
    let [update, create] = entries.items.as_slice() else { panic!("{entries:?}") };
    assert_eq!(
        (create.action.as_str(), create.target.as_str(), create.actor.as_str()),
        ("flag.create", "flag:maintenance", "alice")
    );
    assert_eq!(create.before, None);
    assert_eq!(create.after.as_ref().unwrap()["enabled"], false);
    assert_eq!(create.request_id.as_deref(), Some("request-0"));
    assert_eq!(create.at, at(0));
    assert_eq!(update.action, "flag.update");
    assert_eq!(update.before.as_ref().unwrap()["version"], 1);
    assert_eq!(update.after.as_ref().unwrap()["version"], 2);

    let deleted = store.delete_flag(&updated.name, Some(2), &operator("carol", 20)).await.unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(store.find_flag(&updated.name).await.unwrap(), None);
    assert!(matches!(store.delete_flag(&updated.name, None, &operator("carol", 21)).await, Err(StoreError::NotFound)));
    let newest = store.list_audit(&all_entries()).await.unwrap();
    assert_eq!((newest.total, newest.items[0].action.as_str()), (3, "flag.delete"));
    assert_eq!(newest.items[0].after, None);
}

pub async fn refused_flag_writes_record_nothing(store: SharedStore) {
    store.put_flag(&flag_write("signups", true, None, 0), &operator("alice", 0)).await.unwrap();
    let generation = store.flag_generation().await.unwrap();
    let stale = store.put_flag(&flag_write("signups", false, Some(7), 1), &operator("bob", 1)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(Conflict::FlagChanged))), "{stale:?}");
    let missing = store.put_flag(&flag_write("nothing_here", true, Some(1), 2), &operator("bob", 2)).await;
    assert!(matches!(missing, Err(StoreError::Conflict(Conflict::FlagChanged))), "{missing:?}");
    let name = FlagName::parse("signups").unwrap();
    let stale_delete = store.delete_flag(&name, Some(9), &operator("bob", 3)).await;
    assert!(matches!(stale_delete, Err(StoreError::Conflict(Conflict::FlagChanged))), "{stale_delete:?}");
    // Rolled back: no change, no audit row, the generation where it was.
    assert!(store.find_flag(&name).await.unwrap().unwrap().definition.enabled);
    assert_eq!(store.list_audit(&all_entries()).await.unwrap().total, 1);
    assert_eq!(store.flag_generation().await.unwrap(), generation);
}

pub async fn concurrent_flag_creations_have_one_winner(store: SharedStore) {
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..4 {
        let store = store.clone();
        writes.spawn(async move {
            store.put_flag(&flag_write("guest_checkout", n % 2 == 0, None, n), &operator("ops", n)).await
        });
    }
    let results = writes.join_all().await;
    let created = results.iter().filter(|result| matches!(result, Ok((None, _)))).count();
    assert_eq!(created, 1, "{results:?}");
    // Writes follow one another: the others replaced the created flag, on every backend.
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let succeeded = results.len() as u64;
    let flag = store.find_flag(&FlagName::parse("guest_checkout").unwrap()).await.unwrap().unwrap();
    assert_eq!(flag.version as u64, succeeded);
    assert_eq!(store.list_audit(&all_entries()).await.unwrap().total, succeeded, "one audit row per write");
}

pub async fn audit_entries_filter_page_and_purge(store: SharedStore) {
    for (n, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let seconds = n as i64 * 100;
        store.put_flag(&flag_write(name, true, None, seconds), &operator("alice", seconds)).await.unwrap();
        store.put_flag(&flag_write(name, false, Some(1), seconds + 1), &operator("bob", seconds + 1)).await.unwrap();
    }
    let query = |change: &dyn Fn(&mut AuditQuery)| {
        let mut query = all_entries();
        change(&mut query);
        query
    };
    let listed = |query: AuditQuery| {
        let store = store.clone();
        async move { store.list_audit(&query).await.unwrap() }
    };
    assert_eq!(listed(all_entries()).await.total, 6);
    let creates = listed(query(&|q| q.action = Some("flag.create".into()))).await;
    assert_eq!(creates.total, 3);
    assert!(creates.items.iter().all(|entry| entry.action == "flag.create"));
    assert_eq!(listed(query(&|q| q.action = Some("flag.".into()))).await.total, 6);
    assert_eq!(listed(query(&|q| q.action = Some("fla".into()))).await.total, 0, "an exact action, not a prefix");
    let by_bob = listed(query(&|q| q.actor = Some("bob".into()))).await;
    assert_eq!(by_bob.total, 3);
    let beta = listed(query(&|q| q.target = Some("flag:beta".into()))).await;
    assert_eq!(beta.items.iter().map(|entry| entry.at).collect::<Vec<_>>(), [at(101), at(100)], "newest first");
    assert_eq!(listed(query(&|q| q.since = Some(at(200)))).await.total, 2);
    let second_page = listed(query(&|q| q.page = PageRequest::new(Some(2), Some(4)).unwrap())).await;
    assert_eq!((second_page.total, second_page.items.len()), (6, 2));
    assert_eq!(second_page.items[1].at, at(0));

    assert_eq!(store.purge_audit(at(101), 1).await.unwrap(), 1);
    assert_eq!(store.purge_audit(at(101), 10).await.unwrap(), 2);
    assert_eq!(store.purge_audit(at(101), 10).await.unwrap(), 0);
    assert_eq!(listed(all_entries()).await.items.last().unwrap().at, at(101));
}
