//! One contract test suite for every storage adapter: each case takes a fresh, migrated store and
//! asserts the behaviour the services rely on. Adapters run it with [`contract_tests!`].

#![forbid(unsafe_code)]
// Test code: a failed expectation should stop the test with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account_tokens;
mod accounts;
mod carts;
mod catalog;
mod external_logins;
mod flags;
mod idempotency;
mod jobs;
mod mail;
mod orders;
mod search;
mod webhooks;

use std::sync::Arc;

use shop::Store;
use time::OffsetDateTime;

pub use account_tokens::*;
pub use accounts::*;
pub use carts::*;
pub use catalog::*;
pub use external_logins::*;
pub use flags::*;
pub use idempotency::*;
pub use jobs::*;
pub use mail::*;
pub use orders::*;
pub use search::*;
pub use webhooks::*;

/// A fixed point in time with whole microseconds, so values round-trip exactly.
pub fn at(seconds_after_start: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-11-23 10:00:00.123456 UTC) + time::Duration::seconds(seconds_after_start)
}

/// An operator's audit context at `at(seconds)`.
pub fn operator_audit(seconds: i64) -> shop::audit::AuditContext {
    shop::audit::AuditContext::new("ops", Some(format!("request-{seconds}")), at(seconds))
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
            operators_list_and_end_a_users_sessions,
            api_tokens_lifecycle, api_tokens_of_other_users_are_not_found,
            categories_round_trip, duplicate_category_slug_is_a_conflict, categories_list_sorted_and_paged,
            category_in_use_cannot_be_deleted, products_round_trip, product_constraints_are_named,
            product_list_filters, product_list_sorts_and_pages, conditional_product_update, product_delete,
            catalog_writes_move_the_cache_generations,
            jobs_round_trip, claims_take_due_jobs_by_priority_then_run_at, claims_take_only_the_kinds_asked_for, concurrent_claims_take_each_job_once,
            only_the_lease_owner_finishes_a_job, expired_leases_are_recovered, failed_jobs_wait_for_their_retry_at,
            deferred_jobs_get_their_attempt_back,
            failing_without_a_retry_kills_the_job, jobs_die_after_their_last_attempt, released_jobs_are_due_again,
            operators_retry_dead_and_failed_jobs, unique_keys_allow_one_live_job,
            insert_user_enqueues_its_jobs_atomically, job_list_filters_sorts_and_pages,
            queue_depths_count_by_queue_and_state, finished_jobs_are_purged_by_state_cutoff_and_limit,
            schedules_advance_once_per_occurrence, concurrent_schedule_advances_have_one_winner,
            outbox_mail_round_trip, duplicate_outbox_mail_keeps_the_first,
            outbox_mail_lists_most_recent_first_and_pages, outbox_mail_is_purged_by_cutoff_and_limit,
            email_verified_at_round_trips, replacing_an_account_token_keeps_only_the_newest,
            password_reset_uses_the_token_once, expired_and_wrong_purpose_tokens_are_not_usable,
            tokens_of_disabled_users_are_not_usable, email_verification_keeps_the_first_timestamp,
            concurrent_password_resets_have_one_winner, account_tokens_are_purged_by_cutoff_and_limit,
            login_challenges_record_their_device, login_challenges_are_used_once,
            replacing_a_login_challenge_keeps_only_the_newest, unusable_login_challenges_record_nothing,
            concurrent_login_challenge_confirmations_have_one_winner, remembered_devices_are_known_to_their_user,
            known_devices_unseen_since_the_cutoff_are_forgotten, guests_round_trip,
            upgrading_a_guest_keeps_its_id_and_sessions, upgrading_a_full_account_is_not_found,
            upgrading_an_unknown_id_is_not_found, upgrading_a_guest_to_a_taken_address_is_a_conflict,
            idle_guests_are_deleted_by_cutoff_and_limit, pending_external_logins_are_taken_once,
            expired_pending_external_logins_are_not_returned, concurrent_takes_of_a_pending_login_have_one_winner,
            pending_external_logins_are_purged_by_cutoff_and_limit, external_identities_link_and_find,
            linking_a_linked_subject_is_a_conflict, linking_to_an_unknown_user_is_a_conflict,
            insert_external_user_creates_the_user_identity_and_jobs_atomically,
            external_identities_go_with_their_user, external_identities_are_unlinked_only_by_their_account,
            concurrent_unlinks_of_the_last_two_external_identities_leave_one,
            cart_lines_round_trip_oldest_first, cart_quantity_changes_keep_the_line, cart_line_limit_is_a_conflict,
            unknown_products_in_a_cart_are_a_conflict, merging_a_cart_adds_up_caps_and_limits,
            abandoned_carts_are_purged_by_cutoff_and_limit,
            placing_an_order_reserves_its_stock, failed_reservations_change_nothing, concurrent_orders_never_oversell,
            order_transitions_are_conditional, cancelling_an_order_releases_its_stock,
            paying_an_order_clears_the_ordered_cart_lines, orders_are_found_and_listed,
            deleted_products_leave_their_order_lines, guests_with_orders_are_not_deleted,
            idempotent_requests_start_once, expired_idempotency_locks_are_taken_over,
            completed_idempotent_requests_keep_their_outcome, idempotency_records_are_purged_by_cutoff_and_limit,
            concurrent_idempotent_starts_have_one_winner, payment_events_are_recorded_once_and_purged,
            webhook_endpoints_round_trip_under_their_limit, webhook_endpoint_changes_and_disabling,
            webhook_deliveries_are_unique_per_event_and_enqueue_their_job,
            webhook_deliveries_list_newest_first_filtered_and_paged,
            webhook_attempts_count_the_endpoints_failure_streak,
            webhook_attempts_change_only_live_deliveries,
            only_failed_or_abandoned_webhook_deliveries_are_requeued,
            deleting_a_webhook_endpoint_deletes_its_deliveries,
            stale_live_webhook_deliveries_are_abandoned,
            finished_webhook_deliveries_are_purged_by_cutoff_and_limit,
            flags_round_trip_with_versions_and_audit, refused_flag_writes_record_nothing,
            concurrent_flag_creations_have_one_winner, audit_entries_filter_page_and_purge
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
