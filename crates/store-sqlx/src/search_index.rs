//! Keeping the search index true: each product's analysed document and the vocabulary counts,
//! written inside the transaction of the catalog write that changes them, so a write and its
//! index entry commit or roll back together.

use shop::StoreError;
use shop::search::{Analyzer, distinct_words};
use sqlx::FromRow;
use uuid::Uuid;

use crate::SqlStore;
use crate::codec::{count, error};
use crate::exec::{Executor, Statement, Transaction, sql};

#[derive(FromRow)]
struct IndexedText {
    id: Uuid,
    name: String,
    description: String,
    category_search_name: String,
    category_name: String,
}

/// The folded words a product contributes to the vocabulary.
pub(crate) fn product_words(name: &str, description: &str) -> Vec<String> {
    distinct_words(&format!("{name}\n{description}"))
}

/// Writes the search document of product `id` from its current row; `old_words` are the words
/// it contributed before this write (none for a new product).
pub(crate) async fn index_product(
    tx: &mut Transaction<'_>,
    analyzer: &Analyzer,
    id: Uuid,
    old_words: &[String],
) -> Result<(), StoreError> {
    let text: Option<IndexedText> = tx
        .fetch_optional(
            sql("select products.id, products.name, products.description, categories.search_name as category_search_name, \
                 categories.name as category_name \
                 from products join categories on categories.id = products.category_id where products.id = $1")
            .bind(id),
        )
        .await
        .map_err(error("failed to read a product to index"))?;
    let Some(text) = text else {
        return adjust_vocabulary(tx, &[], old_words).await;
    };
    write_document(tx, analyzer, id, &text).await?;
    let new_words = product_words(&text.name, &text.description);
    adjust_vocabulary(tx, &new_words, old_words).await
}

async fn write_document(
    tx: &mut Transaction<'_>,
    analyzer: &Analyzer,
    id: Uuid,
    text: &IndexedText,
) -> Result<(), StoreError> {
    let category = match text.category_search_name.as_str() {
        // A category written before the index existed: analyse its name now.
        "" => analyzer.document(&text.category_name),
        indexed => indexed.to_owned(),
    };
    // The attributes searches filter by come from the product row (a trigger keeps them after).
    tx.execute(
        sql("insert into product_search_documents \
             (product_id, name, category, description, status, category_id, price_minor, stock, search_boost) \
             select products.id, $2, $3, $4, products.status, products.category_id, products.price_minor, \
             products.stock, products.search_boost from products where products.id = $1 \
             on conflict (product_id) do update set name = excluded.name, category = excluded.category, \
             description = excluded.description, status = excluded.status, category_id = excluded.category_id, \
             price_minor = excluded.price_minor, stock = excluded.stock, search_boost = excluded.search_boost")
        .bind(id)
        .bind(analyzer.document(&text.name))
        .bind(category)
        .bind(analyzer.document(&text.description)),
    )
    .await
    .map_err(error("failed to index a product"))?;
    Ok(())
}

/// Gives a category's products its analysed name (after the category's name changed).
pub(crate) async fn index_category_name(
    tx: &mut Transaction<'_>,
    category_id: Uuid,
    search_name: &str,
) -> Result<(), StoreError> {
    // PostgreSQL: take the documents' locks in product-id order first, the order in which
    // checkout (through the attributes trigger) takes them, so the two never deadlock.
    if tx.dialect() == crate::dialect::Dialect::Postgres {
        let _: Vec<Uuid> = tx
            .fetch_all_scalars(
                sql("select product_id from product_search_documents \
                     where product_id in (select id from products where category_id = $1) \
                     order by product_id for update")
                .bind(category_id),
            )
            .await
            .map_err(error("failed to lock a category's search documents"))?;
    }
    tx.execute(
        sql("update product_search_documents set category = $1 \
             where product_id in (select id from products where category_id = $2)")
        .bind(search_name)
        .bind(category_id),
    )
    .await
    .map_err(error("failed to index a category's products"))?;
    Ok(())
}

/// Counts the words a document gained (`now`) and lost (`before`); bumps the vocabulary
/// version when a word enters or leaves it.
pub(crate) async fn adjust_vocabulary(
    tx: &mut Transaction<'_>,
    now: &[String],
    before: &[String],
) -> Result<(), StoreError> {
    let mut added: Vec<&String> = now.iter().filter(|word| !before.contains(word)).collect();
    let mut removed: Vec<&String> = before.iter().filter(|word| !now.contains(word)).collect();
    // One order for every writer, so two transactions never wait on each other's words in a cycle.
    added.sort_unstable();
    added.dedup();
    removed.sort_unstable();
    removed.dedup();
    let mut changed = false;
    for chunk in added.chunks(500) {
        let mut insert = sql("insert into search_words (word, documents) values ");
        for (index, word) in chunk.iter().enumerate() {
            insert.push(if index == 0 { "(" } else { ", (" }).push_bind(word.as_str()).push(", 1)");
        }
        insert.push(" on conflict (word) do update set documents = search_words.documents + 1 returning documents");
        let counts: Vec<i64> = tx.fetch_all_scalars(insert).await.map_err(error("failed to count words"))?;
        changed |= counts.contains(&1);
    }
    for chunk in removed.chunks(500) {
        // Decrement first (the row lock makes concurrent removals of one word count down one
        // after the other), then delete what reached 0.
        let mut fewer = sql("update search_words set documents = documents - 1 where word in ");
        fewer.push_list(chunk.iter().map(|word| word.as_str()));
        tx.execute(fewer).await.map_err(error("failed to count words"))?;
        let mut gone = sql("delete from search_words where documents = 0 and word in ");
        gone.push_list(chunk.iter().map(|word| word.as_str()));
        changed |= tx.execute(gone).await.map_err(error("failed to count words"))? > 0;
    }
    if changed {
        tx.execute(sql("update search_index_state set vocabulary_version = vocabulary_version + 1 where id = 1"))
            .await
            .map_err(error("failed to bump the vocabulary version"))?;
    }
    Ok(())
}

/// The words product `id` contributes now (read before a write changes them).
pub(crate) async fn current_product_words(tx: &mut Transaction<'_>, id: Uuid) -> Result<Vec<String>, StoreError> {
    let lock = tx.dialect().row_lock("for no key update");
    let mut select = sql("select name, description from products where id = $1").bind(id);
    select.push(" ").push(lock);
    let row: Option<(String, String)> = fetch_pair(tx, select).await?;
    Ok(row.map(|(name, description)| product_words(&name, &description)).unwrap_or_default())
}

async fn fetch_pair(tx: &mut Transaction<'_>, select: Statement) -> Result<Option<(String, String)>, StoreError> {
    #[derive(FromRow)]
    struct Pair {
        name: String,
        description: String,
    }
    let row: Option<Pair> = tx.fetch_optional(select).await.map_err(error("failed to read a product's words"))?;
    Ok(row.map(|pair| (pair.name, pair.description)))
}

/// Products analysed per transaction by a rebuild: small enough that catalog writes between
/// batches wait milliseconds, not the whole rebuild.
const REBUILD_BATCH: i64 = 500;

// === impl SqlStore ===

impl SqlStore {
    /// The analysis the search index was built with (`v1:english`; empty: never built), and
    /// the one this store analyses with.
    pub async fn search_index_signatures(&self) -> Result<(String, String), StoreError> {
        Ok((self.search_index_signature().await?, self.analyzer.signature()))
    }

    async fn search_index_signature(&self) -> Result<String, StoreError> {
        let mut conn = self.connection().await?;
        conn.fetch_scalar(sql("select signature from search_index_state where id = 1"))
            .await
            .map_err(error("failed to read the search index state"))
    }

    /// Rebuilds the search index when it was built by another analysis than this store's
    /// (or never, as after the migration that created it); returns the products indexed.
    pub async fn ensure_search_index(&self) -> Result<Option<u64>, StoreError> {
        let signature = self.search_index_signature().await?;
        if signature == self.analyzer.signature() {
            return Ok(None);
        }
        tracing::info!(
            from = signature.as_str(),
            to = self.analyzer.signature().as_str(),
            "rebuilding the search index"
        );
        self.rebuild_search_index(|_, _| {}).await.map(Some)
    }

    /// Analyses every category and product again and recounts the vocabulary; `progress` hears
    /// `(done, total)` after each batch. Products are indexed in batches of their own
    /// transactions; the vocabulary is recounted from the catalog in one final transaction, so
    /// it is exact even if products changed meanwhile.
    pub async fn rebuild_search_index(&self, progress: impl Fn(u64, u64)) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let total: i64 =
            conn.fetch_scalar(sql("select count(*) from products")).await.map_err(error("failed to count products"))?;
        let total = count(total);
        #[derive(FromRow)]
        struct CategoryName {
            id: Uuid,
            name: String,
        }
        let mut tx = conn.begin_write().await?;
        let categories: Vec<CategoryName> =
            tx.fetch_all(sql("select id, name from categories")).await.map_err(error("failed to read categories"))?;
        for category in &categories {
            tx.execute(
                sql("update categories set search_name = $1 where id = $2")
                    .bind(self.analyzer.document(&category.name))
                    .bind(category.id),
            )
            .await
            .map_err(error("failed to index a category"))?;
        }
        tx.commit().await?;
        let mut done = 0_u64;
        let mut after: Option<Uuid> = None;
        loop {
            let mut tx = conn.begin_write().await?;
            let mut select = sql("select products.id, products.name, products.description, \
                 categories.search_name as category_search_name, categories.name as category_name \
                 from products join categories on categories.id = products.category_id");
            if let Some(after) = after {
                select.push(" where products.id > ").push_bind(after);
            }
            select.push(" order by products.id limit ").push_bind(REBUILD_BATCH);
            // PostgreSQL: hold the batch's products until its documents are written, so a
            // concurrent archive or checkout cannot be overwritten by this older read (in
            // product-id order, as checkout locks them).
            let lock = tx.dialect().row_lock("for share of products");
            select.push(" ").push(lock);
            let batch: Vec<IndexedText> =
                tx.fetch_all(select).await.map_err(error("failed to read products to index"))?;
            let Some(last) = batch.last() else { break };
            after = Some(last.id);
            for text in &batch {
                write_document(&mut tx, &self.analyzer, text.id, text).await?;
            }
            tx.commit().await?;
            done += batch.len() as u64;
            progress(done, total.max(done));
        }
        let mut tx = conn.begin_write().await?;
        // Writers wait while the vocabulary is recounted (SQLite's write transaction already
        // excludes them); readers go on.
        if tx.dialect() == crate::dialect::Dialect::Postgres {
            tx.execute(sql("lock table products, categories in share mode"))
                .await
                .map_err(error("failed to lock the catalog"))?;
        }
        let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let texts: Vec<(String, String)> = {
            #[derive(FromRow)]
            struct Text {
                name: String,
                description: String,
            }
            let products: Vec<Text> = tx
                .fetch_all(sql("select name, description from products"))
                .await
                .map_err(error("failed to read products"))?;
            let categories: Vec<Text> = tx
                .fetch_all(sql("select name, '' as description from categories"))
                .await
                .map_err(error("failed to read categories"))?;
            products.into_iter().chain(categories).map(|text| (text.name, text.description)).collect()
        };
        for (name, description) in &texts {
            for word in product_words(name, description) {
                *counts.entry(word).or_default() += 1;
            }
        }
        tx.execute(sql("delete from search_words")).await.map_err(error("failed to clear the vocabulary"))?;
        let mut words: Vec<(String, u64)> = counts.into_iter().collect();
        words.sort_unstable();
        for chunk in words.chunks(500) {
            let mut insert = sql("insert into search_words (word, documents) values ");
            for (index, (word, documents)) in chunk.iter().enumerate() {
                let documents = i64::try_from(*documents).unwrap_or(i64::MAX);
                insert.push(if index == 0 { "(" } else { ", (" }).push_bind(word.as_str()).push(", ");
                insert.push_bind(documents).push(")");
            }
            tx.execute(insert).await.map_err(error("failed to write the vocabulary"))?;
        }
        tx.execute(
            sql("update search_index_state set signature = $1, vocabulary_version = vocabulary_version + 1 \
                 where id = 1")
            .bind(self.analyzer.signature()),
        )
        .await
        .map_err(error("failed to record the search index state"))?;
        tx.commit().await?;
        self.catalog_written();
        Ok(done)
    }
}
