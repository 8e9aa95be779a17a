//! The `SearchIndex` port on the database's own full-text index: candidates from FTS5
//! (`MATCH`, ranked by `bm25`) or a GIN-indexed `tsvector` (`@@`, ranked by `ts_rank`), then
//! one ranking written once for both: matched words, typos, best fields, the merchant's
//! boost, stock, and the backend's relevance score last.

use async_trait::async_trait;
use shop::Page;
use shop::StoreError;
use shop::catalog::{Category, ProductQuery, ProductSort};
use shop::ports::SearchIndex;
use shop::search::{
    CategoryCount, FacetRequest, Facets, FieldBoosts, IndexHit, IndexQuery, PRICE_BUCKETS, PriceCount, QueryTerm,
    SearchField, SearchOrder,
};
use sqlx::FromRow;
use uuid::Uuid;

use crate::SqlStore;
use crate::catalog::{CategoryRow, ProductRow, category_columns, product_columns, push_product_conditions};
use crate::codec::{count, error, offset};
use crate::dialect::Dialect;
use crate::exec::{Executor as _, Statement, sql};

/// A word's match code packs its typos and field boost into one integer: `typos * 1000 + boost`
/// (boosts stay below 1000), null when the word is not in the product.
const TYPO_UNIT: u32 = 1000;

#[derive(FromRow)]
struct HitRow {
    #[sqlx(flatten)]
    product: ProductRow,
    relevance: f64,
    matched_words: i64,
    typos: i64,
    total_hits: i64,
}

#[derive(FromRow)]
struct CategoryCountRow {
    id: Uuid,
    name: String,
    slug: String,
    products_count: i64,
}

#[derive(FromRow)]
struct BucketRow {
    bucket: i64,
    count: i64,
}

#[derive(FromRow)]
struct StockRow {
    in_stock: i64,
    total: i64,
}

/// The stems of every alternative of every term, each once.
fn stems(terms: &[QueryTerm]) -> Vec<&str> {
    let mut stems: Vec<&str> = terms
        .iter()
        .flat_map(|term| term.alternatives.iter().map(|alternative| alternative.stem.as_str()))
        .filter(|stem| !stem.is_empty())
        .collect();
    stems.sort_unstable();
    stems.dedup();
    stems
}

/// The full-text query matching any of the stems. Stems are letters and digits only (the
/// analyzer splits on everything else), so quoting them is all the escaping they need.
fn full_text_query(dialect: Dialect, stems: &[&str]) -> String {
    let quoted: Vec<String> = match dialect {
        Dialect::Sqlite => stems.iter().map(|stem| format!("\"{stem}\"")).collect(),
        Dialect::Postgres => stems.iter().map(|stem| format!("'{stem}'")).collect(),
    };
    quoted.join(match dialect {
        Dialect::Sqlite => " OR ",
        Dialect::Postgres => " | ",
    })
}

/// `[, relevance] from … where <full-text match>`: the documents matching any stem, as `d`;
/// with `boosts`, also the backend's relevance score as `relevance` (BM25 with column weights in
/// SQLite, `ts_rank` with field weights in PostgreSQL). The match is bound once.
fn push_candidates(statement: &mut Statement, dialect: Dialect, stems: &[&str], boosts: Option<&FieldBoosts>) {
    let matching = full_text_query(dialect, stems);
    match dialect {
        Dialect::Sqlite => {
            if let Some(boosts) = boosts {
                // bm25 is lower-is-better; its column weights follow the table's column order.
                statement.push(&format!(
                    ", -bm25(product_search, {}, {}, {}) as relevance",
                    boosts.name, boosts.category, boosts.description
                ));
            }
            statement.push(
                " from product_search cross join product_search_documents d on d.document_id = product_search.rowid \
                 where product_search match ",
            );
            statement.push_bind(matching);
        }
        Dialect::Postgres => {
            if let Some(boosts) = boosts {
                // ts_rank's weights are {D, C, B, A} in [0, 1]; name is A, category B, description C.
                let top = f64::from(boosts.name.max(boosts.category).max(boosts.description).max(1));
                let weight = |boost: u16| f64::from(boost) / top;
                statement.push(&format!(
                    ", cast(ts_rank('{{0, {:.4}, {:.4}, {:.4}}}'::float4[], d.document, matching) \
                     as double precision) as relevance",
                    weight(boosts.description),
                    weight(boosts.category),
                    weight(boosts.name)
                ));
            }
            statement.push(" from product_search_documents d, to_tsquery('simple', ");
            statement.push_bind(matching).push(") as matching where d.document @@ matching");
        }
    }
}

/// `from … where …` of the search documents matching `terms` within the filters, as `d`
/// (whose attributes are the product's); without terms, of the filtered `products`.
fn push_matching(statement: &mut Statement, dialect: Dialect, terms: &[QueryTerm], filters: &ProductQuery) {
    if terms.is_empty() {
        statement.push(" from products where 1 = 1");
        push_product_conditions(statement, filters, "products");
    } else {
        push_candidates(statement, dialect, &stems(terms), None);
        push_product_conditions(statement, filters, "d");
    }
}

fn field_column(field: SearchField) -> &'static str {
    match field {
        SearchField::Name => "d.name",
        SearchField::Category => "d.category",
        SearchField::Description => "d.description",
    }
}

/// The match code of one term (see [`TYPO_UNIT`]): its cheapest alternative found, in the best
/// field it is found in.
fn push_match_code(statement: &mut Statement, dialect: Dialect, term: &QueryTerm, boosts: &FieldBoosts) {
    let position = dialect.position_function();
    statement.push("case");
    for alternative in &term.alternatives {
        let needle = format!(" {} ", alternative.stem);
        for (field, boost) in boosts.ranked() {
            let code = u32::from(alternative.typos) * TYPO_UNIT + u32::from(boost);
            statement.push(&format!(" when {position}({}, ", field_column(field)));
            statement.push_bind(needle.as_str()).push(&format!(") > 0 then {code}"));
        }
    }
    statement.push(" end");
}

/// The hits as a derived table `h` (product id, its attributes, relevance, `w0`… match codes),
/// filtered.
fn push_hits(statement: &mut Statement, dialect: Dialect, query: &IndexQuery, stems: &[&str]) {
    statement.push(" from (select d.product_id, d.search_boost, d.stock");
    for (index, term) in query.terms.iter().enumerate() {
        statement.push(", ");
        push_match_code(statement, dialect, term, &query.boosts);
        statement.push(&format!(" as w{index}"));
    }
    push_candidates(statement, dialect, stems, Some(&query.boosts));
    push_product_conditions(statement, &query.filters, "d");
    statement.push(") h");
}

fn sort_column(sort: ProductSort) -> &'static str {
    match sort {
        ProductSort::CreatedAt => "products.created_at",
        ProductSort::UpdatedAt => "products.updated_at",
        ProductSort::Name => "products.name",
        ProductSort::Price => "products.price_minor",
        ProductSort::Stock => "products.stock",
    }
}

impl Dialect {
    /// A join that keeps its left side the outer loop. SQLite's planner would otherwise put
    /// the products (by their status index) outside and run the full-text match once per
    /// product — a thousandfold slower at 100k products; `cross join` is SQLite's documented
    /// way to fix the order. PostgreSQL plans the match first on its own.
    fn ordered_join(self) -> &'static str {
        match self {
            Self::Sqlite => "cross join",
            Self::Postgres => "join",
        }
    }

    /// The function finding a substring: `instr(haystack, needle)` / `strpos(haystack, needle)`.
    fn position_function(self) -> &'static str {
        match self {
            Self::Sqlite => "instr",
            Self::Postgres => "strpos",
        }
    }
}

#[async_trait]
impl SearchIndex for SqlStore {
    async fn search(&self, query: &IndexQuery) -> Result<Page<IndexHit>, StoreError> {
        let stems = stems(&query.terms);
        if stems.is_empty() {
            return Ok(Page { items: Vec::new(), total: 0, request: query.filters.page });
        }
        let dialect = self.dialect();
        let stems = &stems;
        self.catalog_read(|mut conn| async move {
            let codes = 0..query.terms.len();
            let matched: Vec<String> =
                codes.clone().map(|i| format!("case when h.w{i} is null then 0 else 1 end")).collect();
            let typos: Vec<String> = codes.clone().map(|i| format!("coalesce(h.w{i} / {TYPO_UNIT}, 0)")).collect();
            let fields: Vec<String> = codes.map(|i| format!("coalesce(h.w{i} % {TYPO_UNIT}, 0)")).collect();
            // The total rides along as a window over every hit, counted before the page is cut: one
            // pass over the candidates instead of two.
            let ranks = format!(
                "h.product_id, h.search_boost, h.stock, h.relevance, count(*) over () as total_hits, \
                 cast({} as bigint) as matched_words, \
                 cast({} as bigint) as typos, cast({} as bigint) as fields",
                matched.join(" + "),
                typos.join(" + "),
                fields.join(" + ")
            );
            let ordered_join = dialect.ordered_join();
            let select = match query.order {
                // The page is chosen among the documents alone; only its products are read.
                SearchOrder::Relevance => {
                    let order = "matched_words desc, typos asc, fields desc, search_boost desc, (stock > 0) desc, \
                                 relevance desc, product_id asc";
                    let mut page = Statement::owned(format!(
                        "select {}, m.relevance, m.matched_words, m.typos, m.total_hits from (select {ranks}",
                        product_columns!()
                    ));
                    push_hits(&mut page, dialect, query, stems);
                    page.push(&format!(" order by {order} limit ")).push_bind(query.filters.page.limit());
                    page.push(" offset ").push_bind(offset(query.filters.page));
                    page.push(&format!(
                        ") m {ordered_join} products on products.id = m.product_id order by m.matched_words desc, \
                         m.typos asc, m.fields desc, m.search_boost desc, (m.stock > 0) desc, m.relevance desc, \
                         m.product_id asc"
                    ));
                    page
                }
                // A column of the product: ordered after the join.
                SearchOrder::By(sort, order) => {
                    let mut select = Statement::owned(format!(
                        "select {}, m.relevance, m.matched_words, m.typos, m.total_hits from (select {ranks}",
                        product_columns!()
                    ));
                    push_hits(&mut select, dialect, query, stems);
                    let order = order.sql();
                    select.push(&format!(
                        ") m {ordered_join} products on products.id = m.product_id order by {} {order}, products.id {order} \
                         limit ",
                        sort_column(sort)
                    ));
                    select.push_bind(query.filters.page.limit()).push(" offset ");
                    select.push_bind(offset(query.filters.page));
                    select
                }
            };
            let rows: Vec<HitRow> = conn.fetch_all(select).await.map_err(error("failed to search products"))?;
            let total = match rows.first() {
                Some(row) => row.total_hits,
                // No row: no hits at all, or a page past the last one (then count them).
                None if query.filters.page.page() == 1 => 0,
                None => {
                    let mut count_query = sql("select count(*)");
                    push_matching(&mut count_query, dialect, &query.terms, &query.filters);
                    conn.fetch_scalar(count_query).await.map_err(error("failed to count search hits"))?
                }
            };
            let items = rows
                .into_iter()
                .map(|row| {
                    Ok(IndexHit {
                        product: row.product.into_product()?,
                        relevance: row.relevance,
                        matched_words: u32::try_from(row.matched_words).unwrap_or(0),
                        typos: u32::try_from(row.typos).unwrap_or(0),
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Page { items, total: count(total), request: query.filters.page })
        })
        .await
    }

    async fn facets(
        &self,
        terms: &[QueryTerm],
        filters: &ProductQuery,
        wanted: FacetRequest,
    ) -> Result<Facets, StoreError> {
        if !terms.is_empty() && stems(terms).is_empty() {
            let mut facets = Facets::default();
            // Terms that can match nothing: every facet asked for, with nothing counted.
            let buckets =
                PRICE_BUCKETS.iter().map(|(from, to)| PriceCount { from_minor: *from, to_minor: *to, count: 0 });
            facets.categories = wanted.category.then(Vec::new);
            facets.prices = wanted.price.then(|| buckets.collect());
            facets.stock = wanted.in_stock.then_some((0, 0));
            return Ok(facets);
        }
        let dialect = self.dialect();
        // Search documents carry the product's attributes: counting hits never reads products.
        let table = if terms.is_empty() { "products" } else { "d" };
        self.catalog_read(|mut conn| async move {
            let mut facets = Facets::default();
            if wanted.category {
                let mut select = Statement::owned(format!(
                    "select categories.id, categories.name, categories.slug, f.products_count from \
                     (select {table}.category_id, count(*) as products_count"
                ));
                push_matching(&mut select, dialect, terms, filters);
                select.push(&format!(
                    " group by {table}.category_id) f {} categories on categories.id = f.category_id \
                     order by f.products_count desc, categories.name asc, categories.id asc",
                    dialect.ordered_join()
                ));
                let rows: Vec<CategoryCountRow> =
                    conn.fetch_all(select).await.map_err(error("failed to count products per category"))?;
                facets.categories = Some(
                    rows.into_iter()
                        .map(|row| CategoryCount {
                            id: row.id,
                            name: row.name,
                            slug: row.slug,
                            count: count(row.products_count),
                        })
                        .collect(),
                );
            }
            if wanted.price {
                let mut bucket = String::from("case");
                for (index, (_, to)) in PRICE_BUCKETS.iter().enumerate() {
                    match to {
                        Some(to) => bucket.push_str(&format!(" when {table}.price_minor < {to} then {index}")),
                        None => bucket.push_str(&format!(" else {index}")),
                    }
                }
                bucket.push_str(" end");
                let mut select = Statement::owned(format!("select cast({bucket} as bigint) as bucket, count(*) as count"));
                push_matching(&mut select, dialect, terms, filters);
                select.push(" group by 1");
                let rows: Vec<BucketRow> = conn.fetch_all(select).await.map_err(error("failed to count price buckets"))?;
                facets.prices = Some(
                    PRICE_BUCKETS
                        .iter()
                        .enumerate()
                        .map(|(index, (from, to))| PriceCount {
                            from_minor: *from,
                            to_minor: *to,
                            count: rows
                                .iter()
                                .find(|row| usize::try_from(row.bucket).ok() == Some(index))
                                .map_or(0, |row| count(row.count)),
                        })
                        .collect(),
                );
            }
            if wanted.in_stock {
                let mut select = Statement::owned(format!(
                    "select cast(coalesce(sum(case when {table}.stock > 0 then 1 else 0 end), 0) as bigint) as in_stock, \
                     count(*) as total"
                ));
                push_matching(&mut select, dialect, terms, filters);
                let row: StockRow = conn.fetch_one(select).await.map_err(error("failed to count stock"))?;
                let in_stock = count(row.in_stock);
                facets.stock = Some((in_stock, count(row.total).saturating_sub(in_stock)));
            }
            Ok(facets)
        })
        .await
    }

    async fn matching_categories(&self, terms: &[QueryTerm], limit: u32) -> Result<Vec<Category>, StoreError> {
        let stems = stems(terms);
        if stems.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let position = self.dialect().position_function();
        let stems = &stems;
        self.catalog_read(|mut conn| async move {
            let mut select = sql(concat!("select ", category_columns!(), " from categories where "));
            for (index, stem) in stems.iter().enumerate() {
                if index > 0 {
                    select.push(" or ");
                }
                select.push(&format!("{position}(categories.search_name, "));
                select.push_bind(format!(" {stem} ")).push(") > 0");
            }
            select.push(" order by categories.name, categories.id limit ").push_bind(limit);
            let rows: Vec<CategoryRow> = conn.fetch_all(select).await.map_err(error("failed to find categories"))?;
            rows.into_iter().map(CategoryRow::into_category).collect()
        })
        .await
    }

    async fn vocabulary_version(&self) -> Result<u64, StoreError> {
        self.catalog_read(|mut conn| async move { read_vocabulary_version(&mut conn).await }).await
    }

    async fn vocabulary(&self) -> Result<(u64, Vec<(String, u64)>), StoreError> {
        #[derive(FromRow)]
        struct WordRow {
            word: String,
            documents: i64,
        }
        // The version first, on the same connection: words read after it are at least as new,
        // so a change in between only makes the next check reload once more.
        self.catalog_read(|mut conn| async move {
            let version = read_vocabulary_version(&mut conn).await?;
            let rows: Vec<WordRow> = conn
                .fetch_all(sql("select word, documents from search_words"))
                .await
                .map_err(error("failed to read the vocabulary"))?;
            Ok((version, rows.into_iter().map(|row| (row.word, count(row.documents))).collect()))
        })
        .await
    }
}

async fn read_vocabulary_version(conn: &mut crate::exec::Connection) -> Result<u64, StoreError> {
    let version: i64 = conn
        .fetch_scalar(sql("select vocabulary_version from search_index_state where id = 1"))
        .await
        .map_err(error("failed to read the vocabulary version"))?;
    Ok(count(version))
}
