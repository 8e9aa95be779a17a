//! One contract test suite for every storage adapter: each case takes a fresh, migrated store and
//! asserts the behaviour the services rely on. Adapters run it with [`contract_tests!`].

#![forbid(unsafe_code)]
// Test code: a failed expectation should stop the test with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod catalog;

use std::sync::Arc;

use shop::Store;
use time::OffsetDateTime;

pub use accounts::*;
pub use catalog::*;

/// A fixed point in time with whole microseconds, so values round-trip exactly.
pub fn at(seconds_after_start: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-11-23 10:00:00.123456 UTC) + time::Duration::seconds(seconds_after_start)
}

/// The shared store handle every case receives.
pub type SharedStore = Arc<dyn Store>;

/// Generates one `#[tokio::test]` per contract case. `$make` is an async expression evaluating
/// to a fresh, migrated `Arc<dyn Store>` and a guard that cleans the database up when dropped.
#[macro_export]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!(@cases $make;
            users_round_trip, duplicate_email_is_a_conflict, update_user_changes_only_given_fields,
            update_missing_user_is_not_found, list_users_filters_and_pages,
            sessions_lifecycle, delete_user_sessions_keeps_the_current_one, expired_sessions_are_purged,
            api_tokens_lifecycle, api_tokens_of_other_users_are_not_found,
            categories_round_trip, duplicate_category_slug_is_a_conflict, categories_list_sorted_and_paged,
            category_in_use_cannot_be_deleted, products_round_trip, product_constraints_are_named,
            product_list_filters, product_list_sorts_and_pages, conditional_product_update, product_delete
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, guard) = $make.await;
                $crate::$case(store.clone()).await;
                store.close().await;
                drop(guard);
            }
        )*
    };
}
