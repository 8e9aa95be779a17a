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
    // Later migrations first, then checkout_outcomes itself.
    loop {
        let reverted = store.migrate_down().await.unwrap().expect("checkout_outcomes is applied");
        if reverted == 20261203000011 {
            break;
        }
    }
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

/// Text answers of a raw query on the store's own database (each column as text).
pub trait RawText {
    async fn texts(&mut self, query: &str) -> Vec<Vec<String>>;
}

/// Every catalog write keeps the search index true in its own transaction: the analysed
/// document of each product, its category's analysed name, and the vocabulary counts (with
/// their version). `matches` is the backend's full-text query counting, as text, the products
/// whose document holds the stem `{}`.
pub async fn catalog_writes_keep_the_search_index(store: SqlStore, raw: &mut impl RawText, matches: &str) {
    use shop::catalog::{CategoryChanges, ProductChanges, Text};
    let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(store.clone());
    let category = store_tests::add_category(&shared, "laptops", 0).await;
    let renamed = CategoryChanges { name: Some(Text::name("Laptops & Notebooks").unwrap()), ..Default::default() };
    shared.update_category(category.id, &renamed, at(1)).await.unwrap();
    let mut product = store_tests::new_product(category.id, "gaming-laptop", 99_900, 3, 2);
    product.name = Text::name("Gaming Laptop").unwrap();
    product.description = Text::description("Fast, café-grade cooling.").unwrap();
    shared.insert_product(&product).await.unwrap();

    let document = raw.texts("select name, category, description from product_search_documents").await;
    assert_eq!(document, [[" game laptop ", " laptop notebook ", " fast cafe grade cool "]]);
    let found = |stem: &str| matches.replace("{}", stem);
    assert_eq!(raw.texts(&found("cafe")).await, [["1"]], "diacritics are folded in the index");
    let words = vocabulary(raw).await;
    assert_eq!(words, ["cafe 1", "cooling 1", "fast 1", "gaming 1", "grade 1", "laptop 1", "laptops 1", "notebooks 1"]);
    let version_before = vocabulary_version(raw).await;

    // A write that fails leaves no trace in the index.
    let mut orphan = store_tests::new_product(uuid::Uuid::now_v7(), "orphan", 100, 1, 3);
    orphan.name = Text::name("Orphan zeppelin").unwrap();
    shared.insert_product(&orphan).await.unwrap_err();
    assert_eq!(raw.texts(&found("zeppelin")).await, [["0"]]);
    assert_eq!(vocabulary(raw).await, words);
    assert_eq!(vocabulary_version(raw).await, version_before);

    // Changing only the stock leaves the index alone; changing text moves the words.
    let stock_only = ProductChanges { stock: Some(shop::catalog::Stock::new(9).unwrap()), ..Default::default() };
    shared.update_product(product.id, &stock_only, None, at(4)).await.unwrap();
    assert_eq!(vocabulary_version(raw).await, version_before);
    let changes = ProductChanges { name: Some(Text::name("Office Laptop").unwrap()), ..Default::default() };
    shared.update_product(product.id, &changes, None, at(5)).await.unwrap();
    let words = vocabulary(raw).await;
    assert!(words.contains(&"office 1".to_owned()) && !words.iter().any(|w| w.starts_with("gaming")), "{words:?}");
    assert!(vocabulary_version(raw).await > version_before);
    assert_eq!(raw.texts(&found("game")).await, [["0"]], "the old name left the index");

    // Renaming the category re-indexes its products' category field.
    let renamed = CategoryChanges { name: Some(Text::name("Notebooks").unwrap()), ..Default::default() };
    shared.update_category(category.id, &renamed, at(6)).await.unwrap();
    assert_eq!(raw.texts("select category from product_search_documents").await, [[" notebook "]]);
    assert!(!vocabulary(raw).await.iter().any(|word| word.starts_with("laptops")));

    // Deleting the product removes its document and its words.
    shared.delete_product(product.id).await.unwrap();
    assert_eq!(raw.texts("select cast(count(*) as text) from product_search_documents").await, [["0"]]);
    assert_eq!(raw.texts(&found("laptop")).await, [["0"]]);
    assert_eq!(vocabulary(raw).await, ["notebooks 1"]);
    shared.delete_category(category.id).await.unwrap();
    assert!(vocabulary(raw).await.is_empty());
}

/// `word count` lines of the vocabulary, in word order.
async fn vocabulary(raw: &mut impl RawText) -> Vec<String> {
    let rows = raw.texts("select word || ' ' || cast(documents as text) from search_words order by word").await;
    rows.into_iter().flatten().collect()
}

async fn vocabulary_version(raw: &mut impl RawText) -> i64 {
    let rows = raw.texts("select cast(vocabulary_version as text) from search_index_state").await;
    rows[0][0].parse().unwrap()
}

/// A rebuild (as at startup after the migration that created the index) indexes products
/// written without an index and recounts the vocabulary exactly; with the index current it
/// does nothing.
pub async fn the_search_index_rebuilds_when_its_analysis_changed(store: SqlStore, raw: &mut impl RawText) {
    use shop::catalog::Text;
    let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(store.clone());
    let category = store_tests::add_category(&shared, "lamps", 0).await;
    for (slug, name) in [("desk-lamp", "Desk Lamp"), ("floor-lamp", "Floor Lamp"), ("bulb", "Warm Bulb")] {
        let mut product = store_tests::new_product(category.id, slug, 1_000, 1, 1);
        product.name = Text::name(name).unwrap();
        shared.insert_product(&product).await.unwrap();
    }
    assert_eq!(store.ensure_search_index().await.unwrap(), Some(3), "the migration leaves no signature");
    let documents = "select name || '|' || category || '|' || description from product_search_documents order by name";
    let indexed = raw.texts(documents).await;
    let words = vocabulary(raw).await;
    assert!(words.contains(&"lamp 2".to_owned()) && words.contains(&"category 1".to_owned()), "{words:?}");
    assert_eq!(store.ensure_search_index().await.unwrap(), None);

    // As before the index existed: no documents, no vocabulary, no signature.
    raw.texts("delete from product_search_documents").await;
    raw.texts("delete from search_words").await;
    raw.texts("update search_index_state set signature = ''").await;
    raw.texts("update categories set search_name = ''").await;
    let before = vocabulary_version(raw).await;
    let done = std::sync::Mutex::new(Vec::new());
    let rebuilt = store.rebuild_search_index(|done_now, total| done.lock().unwrap().push((done_now, total))).await;
    assert_eq!(rebuilt.unwrap(), 3);
    assert_eq!(done.into_inner().unwrap(), [(3, 3)]);
    assert_eq!(raw.texts(documents).await, indexed);
    assert_eq!(vocabulary(raw).await, words);
    assert!(vocabulary_version(raw).await > before);
    assert_eq!(store.ensure_search_index().await.unwrap(), None);
}

/// A flag write and its audit row are one transaction: with audit rows refused (`refuse_audit`
/// installs a trigger that fails every insert into `audit_log`), a creation, an update and a
/// deletion each fail and change nothing (nor the generation), and an action that records its
/// row first (`record_action`) is refused.
pub async fn a_flag_write_whose_audit_row_fails_changes_nothing<C>(store: SqlStore, raw: &mut C, refuse_audit: &str)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    use shop::ports::{AuditRepository as _, FlagRepository as _};
    let audit = shop::audit::AuditContext::new("ops", None, at(0));
    let (_, existing) = store.put_flag(&store_tests::flag_write("signups", true, None, 0), &audit).await.unwrap();
    let generation = store.flag_generation().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(refuse_audit.to_owned())).execute(&mut *raw).await.unwrap();

    let create = store_tests::flag_write("maintenance", true, None, 1);
    store.put_flag(&create, &audit).await.expect_err("the audit row cannot be written");
    let update = store_tests::flag_write("signups", false, Some(1), 2);
    store.put_flag(&update, &audit).await.expect_err("the audit row cannot be written");
    store.delete_flag(&existing.name, None, &audit).await.expect_err("the audit row cannot be written");
    assert_eq!(store.list_flags().await.unwrap(), vec![existing], "nothing created, changed or deleted");
    assert_eq!(store.flag_generation().await.unwrap(), generation);
    store.record_action(&audit, "breaker.reset", "breaker:redis", None, None).await.expect_err("refused");
    let entries = store.list_audit(&shop::audit::AuditQuery::default()).await.unwrap();
    assert_eq!(entries.total, 1, "only the first creation's row");
}
