//! Adapter tests both backends run that the contract suite cannot express: migrations going
//! down and up, and what a migration does to rows written before it.

use shop::Store;
use shop::accounts::Role;
use shop::orders::{CheckoutResult, IdempotencyBegin, IdempotencyState};
use sqlx::AssertSqlSafe;
use store_sqlx::SqlStore;
use store_tests::{add_products, at, new_idempotency_record, new_order, new_user};

/// Every migration reverts, newest first, until none is applied, and all apply again.
pub async fn migrations_go_down_and_up_again(store: &SqlStore) {
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.applied));
    let applied = store.migration_status().await.unwrap().len();
    for reverted in 1..=applied {
        assert!(store.migrate_down().await.unwrap().is_some());
        let status = store.migration_status().await.unwrap();
        assert_eq!(status.iter().filter(|m| !m.applied).count(), reverted);
    }
    assert!(store.migration_status().await.unwrap().iter().all(|m| !m.applied));
    assert_eq!(store.migrate_down().await.unwrap(), None);
    store.migrate_up().await.unwrap();
}

/// Completed checkouts saved as HTTP responses (before `checkout_outcomes`) keep their
/// outcome and order when the migration turns them into outcomes. `raw` is a connection of
/// the store's own database.
pub async fn saved_checkout_responses_become_outcomes<C>(store: SqlStore, raw: &mut C)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(store.clone());
    let ada = shared.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let products = add_products(&shared, &[("dune", 500, 5)]).await;
    let order = shared.place_order(&new_order(ada.id, &[(&products[0], 1)], 0), None, &[]).await.unwrap().unwrap();
    let keys = [
        ("k-201", 201, CheckoutResult::Paid),
        ("k-202", 202, CheckoutResult::Pending),
        ("k-402", 402, CheckoutResult::Declined),
    ];
    for (key, _, _) in keys {
        shared.begin_idempotent(&new_idempotency_record(ada.id, key, 0), at(0)).await.unwrap();
    }
    // Back to the shape before the migration, and completed as that shape stored them.
    let reverted = store.migrate_down().await.unwrap();
    assert!(reverted.is_some_and(|version| version >= 20261203000011));
    for (key, status, _) in keys {
        let complete = format!(
            "update idempotency_records set state = 'completed', locked_until = null, response_status = {status}, \
             response_body = '{{}}', order_id = (select id from orders) where key = '{key}'"
        );
        sqlx::raw_sql(AssertSqlSafe(complete)).execute(&mut *raw).await.unwrap();
    }
    store.migrate_up().await.unwrap();
    for (key, _, result) in keys {
        let begun = shared.begin_idempotent(&new_idempotency_record(ada.id, key, 60), at(60)).await.unwrap();
        let IdempotencyBegin::Existing(record) = begun else { panic!("{key}: {begun:?}") };
        assert_eq!((record.state, record.order_id), (IdempotencyState::Completed(result), Some(order.id)), "{key}");
    }
}
