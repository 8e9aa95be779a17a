//! Search benchmark at the service level (run by `bench/search.sh`): seeds a deterministic
//! catalog of realistic products through the store (so the index is written as in production),
//! times a full index rebuild, reports the index's size, then runs each query kind with
//! CONCURRENCY tasks for DURATION_SECS and prints req/s, p50 and p99 — next to the naive
//! `LIKE '%word%'` scan (`ILIKE` on PostgreSQL) on the same data, the baseline to beat.
//!
//! Environment: DATABASE_URL (sqlite://… or postgres://…), PRODUCTS (default 100000),
//! CONCURRENCY (16), DURATION_SECS (10), SEED (42), ONLY (run only the queries whose label
//! contains it, e.g. `ONLY="one common"` under `perf record`). Prints one Markdown table; asserts nothing
//! except that every query ran.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shop::PageRequest;
use shop::catalog::{
    Currency, Money, NewCategory, NewProduct, ProductQuery, ProductStatus, SearchBoost, Slug, Stock, Text,
};
use shop::ports::{CategoryRepository, ProductRepository, StoreHealth};
use shop::search::{FacetRequest, SearchOrder, SearchService, SearchSettings, SearchText};
use store_sqlx::{PostgresSettings, SqlStore, SqliteSettings};

const CATEGORIES: [(&str, &[&str]); 20] = [
    ("Laptops", &["Laptop", "Notebook", "Ultrabook", "Chromebook"]),
    ("Headphones", &["Headphones", "Earbuds", "Headset"]),
    ("Keyboards", &["Keyboard", "Keypad", "Keycaps"]),
    ("Monitors", &["Monitor", "Display", "Screen"]),
    ("Speakers", &["Speaker", "Soundbar", "Subwoofer"]),
    ("Cameras", &["Camera", "Webcam", "Lens", "Tripod"]),
    ("Phones", &["Phone", "Smartphone", "Charger", "Case"]),
    ("Kitchen", &["Kettle", "Toaster", "Blender", "Knife", "Pan"]),
    ("Furniture", &["Desk", "Chair", "Shelf", "Stool", "Table"]),
    ("Lighting", &["Lamp", "Bulb", "Lantern", "Spotlight"]),
    ("Garden", &["Hose", "Shovel", "Planter", "Rake"]),
    ("Bags", &["Backpack", "Sleeve", "Tote", "Duffel"]),
    ("Clothing", &["Jacket", "Sweater", "Scarf", "Hat", "Gloves"]),
    ("Shoes", &["Sneakers", "Boots", "Sandals", "Slippers"]),
    ("Sports", &["Ball", "Racket", "Bottle", "Mat", "Dumbbell"]),
    ("Toys", &["Puzzle", "Robot", "Blocks", "Kite"]),
    ("Books", &["Notebook", "Journal", "Planner", "Sketchbook"]),
    ("Office", &["Stapler", "Pen", "Folder", "Organizer"]),
    ("Bathroom", &["Towel", "Mirror", "Dispenser", "Mat"]),
    ("Tools", &["Drill", "Hammer", "Screwdriver", "Wrench", "Saw"]),
];
const ADJECTIVES: [&str; 20] = [
    "Compact",
    "Wireless",
    "Portable",
    "Ergonomic",
    "Premium",
    "Classic",
    "Smart",
    "Heavy-Duty",
    "Lightweight",
    "Vintage",
    "Modern",
    "Rugged",
    "Foldable",
    "Waterproof",
    "Silent",
    "Rechargeable",
    "Stainless",
    "Organic",
    "Handmade",
    "Digital",
];
const MATERIALS: [&str; 15] = [
    "Aluminium",
    "Bamboo",
    "Leather",
    "Cotton",
    "Steel",
    "Oak",
    "Ceramic",
    "Glass",
    "Wool",
    "Carbon",
    "Titanium",
    "Linen",
    "Walnut",
    "Silicone",
    "Copper",
];
const MODELS: [&str; 8] = ["Pro", "Mini", "Max", "Plus", "Lite", "X2", "S", "Air"];
const USES: [&str; 10] = [
    "the office",
    "travel",
    "gaming",
    "the kitchen",
    "outdoor adventures",
    "students",
    "home workouts",
    "small apartments",
    "professionals",
    "everyday carry",
];
const COLOURS: [&str; 10] =
    ["black", "white", "navy", "forest green", "graphite", "sand", "red", "silver", "rose", "teal"];
const FEATURES: [&str; 12] = [
    "a long-lasting battery",
    "noise cancelling",
    "a scratch-resistant finish",
    "a magnetic closure",
    "adjustable height",
    "fast charging over USB-C",
    "a soft-touch grip",
    "dishwasher-safe parts",
    "a two-year warranty",
    "recycled packaging",
    "a detachable strap",
    "Bluetooth 5.3",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// One product of the generated catalog: name, description, price (minor units), stock.
fn generate(rng: &mut StdRng, nouns: &[&str]) -> (String, String, i64, i64) {
    let adjective = pick(rng, &ADJECTIVES);
    let material = pick(rng, &MATERIALS);
    let noun = pick(rng, nouns);
    let mut name = match rng.random_range(0..3) {
        0 => format!("{adjective} {noun}"),
        1 => format!("{adjective} {material} {noun}"),
        _ => format!("{material} {noun}"),
    };
    if rng.random_bool(0.4) {
        name.push(' ');
        name.push_str(pick(rng, &MODELS));
    }
    let description = format!(
        "A {} {} made of {}, ideal for {}. Features {} and {}. Available in {} and {}.",
        adjective.to_lowercase(),
        noun.to_lowercase(),
        pick(rng, &MATERIALS).to_lowercase(),
        pick(rng, &USES),
        pick(rng, &FEATURES),
        pick(rng, &FEATURES),
        pick(rng, &COLOURS),
        pick(rng, &COLOURS),
    );
    // Prices from 1 to about 2,000 EUR, most of them low.
    let price_minor = (100.0 * (1.0 + rng.random::<f64>().powi(3) * 2_000.0)).round() as i64;
    let stock = if rng.random_bool(0.1) { 0 } else { rng.random_range(1..200) };
    (name, description, price_minor, stock)
}

async fn seed(store: &Arc<SqlStore>, products: u64, seed: u64, concurrency: u64) -> Duration {
    let started = Instant::now();
    let mut category_ids = Vec::new();
    for (index, (name, _)) in CATEGORIES.iter().enumerate() {
        let category = NewCategory {
            id: shop::new_id(),
            name: Text::name(name).unwrap(),
            slug: Slug::parse(&format!("bench-{index}")).unwrap(),
            description: Text::description("").unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        };
        category_ids.push(store.insert_category(&category).await.unwrap().id);
    }
    let category_ids = Arc::new(category_ids);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let store = Arc::clone(store);
        let category_ids = Arc::clone(&category_ids);
        tasks.push(tokio::spawn(async move {
            let eur = Currency::parse("EUR").unwrap();
            for number in (worker..products).step_by(concurrency as usize) {
                // Each product from its own stream: the catalog does not depend on concurrency.
                let mut rng = StdRng::seed_from_u64(seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let category = rng.random_range(0..CATEGORIES.len());
                let (name, description, price_minor, stock) = generate(&mut rng, CATEGORIES[category].1);
                let product = NewProduct {
                    id: shop::new_id(),
                    name: Text::name(&name).unwrap(),
                    slug: Slug::parse(&format!("p-{number}")).unwrap(),
                    description: Text::description(&description).unwrap(),
                    price: Money::from_minor(price_minor, eur).unwrap(),
                    stock: Stock::new(stock).unwrap(),
                    category_id: category_ids[category],
                    search_boost: SearchBoost::default(),
                    created_at: time::OffsetDateTime::now_utc(),
                };
                store.insert_product(&product).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// Runs `query` from `concurrency` tasks for `duration`; returns (req/s, p50, p99, hits of the last run).
async fn measure<F, Fut>(concurrency: u64, duration: Duration, query: F) -> (f64, Duration, Duration, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let query = Arc::new(query);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let query = Arc::clone(&query);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut hits = 0;
            while Instant::now() < deadline {
                let began = Instant::now();
                hits = query().await;
                latencies.push(began.elapsed());
            }
            (latencies, hits)
        }));
    }
    let mut latencies = Vec::new();
    let mut hits = 0;
    for task in tasks {
        let (mut more, found) = task.await.unwrap();
        latencies.append(&mut more);
        hits = found;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |quantile: f64| latencies[((latencies.len() as f64 * quantile) as usize).min(latencies.len() - 1)];
    (latencies.len() as f64 / elapsed, at(0.50), at(0.99), hits)
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let products = env("PRODUCTS", 100_000);
    let concurrency = env("CONCURRENCY", 16);
    let duration = Duration::from_secs(env("DURATION_SECS", 10));
    let seed_value = env("SEED", 42);
    let postgres = url.starts_with("postgres");
    let connections = u32::try_from(concurrency).unwrap().max(4);
    let store = if postgres {
        store_sqlx::provisioning::create_database_if_missing(&url).await.unwrap();
        SqlStore::postgres(&PostgresSettings {
            url: url.clone(),
            max_connections: connections,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(600),
            pgbouncer: false,
        })
        .await
        .unwrap()
    } else {
        SqlStore::sqlite(&SqliteSettings {
            url: url.clone(),
            max_connections: connections,
            acquire_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap()
    };
    store.migrate_up().await.unwrap();
    let store = Arc::new(store);
    let backend = store.backend();
    let existing = store.list_products(&ProductQuery::default()).await.unwrap().total;
    let seeded = match existing {
        0 => seed(&store, products, seed_value, concurrency).await,
        _ if existing == products => Duration::ZERO,
        _ => panic!("the database holds {existing} products, not {products}: use an empty one"),
    };
    let rebuild_started = Instant::now();
    store.rebuild_search_index(|_, _| {}).await.unwrap();
    let rebuilt = rebuild_started.elapsed();
    let (index_bytes, table_bytes) = sizes(&url, postgres).await;
    eprintln!("{backend}: seeded {products} products in {:.1} s (0: seeded before)", seeded.as_secs_f64());

    let search = SearchService::new(Arc::clone(&store) as _, SearchSettings::default());
    let filters = ProductQuery {
        page: PageRequest::new(Some(1), Some(20)).unwrap(),
        status: Some(ProductStatus::Active),
        ..ProductQuery::default()
    };
    let mut rows = Vec::new();
    let kinds: [(&str, &str, FacetRequest); 4] = [
        ("q=wireless (one common word)", "wireless", FacetRequest::default()),
        ("q=wireless headphones", "wireless headphones", FacetRequest::default()),
        ("q=wirelss (typo)", "wirelss", FacetRequest::default()),
        ("q=wireless + 3 facets", "wireless", FacetRequest { category: true, price: true, in_stock: true }),
    ];
    // ONLY=<text> runs just the queries whose label holds it (for profiling one).
    let only = std::env::var("ONLY").unwrap_or_default();
    let wanted = |label: &str| label.contains(only.as_str());
    for (label, text, facets) in kinds.into_iter().filter(|(label, _, _)| wanted(label)) {
        let search = search.clone();
        let filters = filters.clone();
        let text = SearchText::parse(text).unwrap();
        let result = measure(concurrency, duration, move || {
            let search = search.clone();
            let filters = filters.clone();
            let text = text.clone();
            async move { search.search(&text, &filters, SearchOrder::Relevance, facets).await.unwrap().page.total }
        })
        .await;
        rows.push((label, result));
    }
    if wanted("suggestions q=wir") {
        let search = search.clone();
        let text = SearchText::parse("wir").unwrap();
        let result = measure(concurrency, duration, move || {
            let search = search.clone();
            let text = text.clone();
            async move { search.suggest(&text, 8).await.unwrap().products.len() as u64 }
        })
        .await;
        rows.push(("suggestions q=wir", result));
    }
    let naive = naive_pool(&url, postgres, connections).await;
    let naive_kinds = [("naive LIKE %wireless%", "wireless"), ("naive LIKE %wirelss% (typo)", "wirelss")];
    for (label, word) in naive_kinds.into_iter().filter(|(label, _)| wanted(label)) {
        let naive = naive.clone();
        let result = measure(concurrency, duration, move || {
            let naive = naive.clone();
            async move { naive.search(word).await }
        })
        .await;
        rows.push((label, result));
    }
    println!(
        "\n{backend}: {products} products, {concurrency} concurrent tasks, {} s per query, index rebuilt in {:.1} s, \
         index {:.1} MiB (catalog tables {:.1} MiB)\n",
        duration.as_secs(),
        rebuilt.as_secs_f64(),
        index_bytes as f64 / 1_048_576.0,
        table_bytes as f64 / 1_048_576.0
    );
    println!("| backend | query | req/s | p50 ms | p99 ms | hits |");
    println!("|---------|-------|------:|-------:|-------:|-----:|");
    for (label, (rps, p50, p99, hits)) in rows {
        println!(
            "| {backend} | {label} | {rps:.0} | {:.2} | {:.2} | {hits} |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    store.close().await;
}

/// The search index's bytes and the products and categories tables' bytes.
async fn sizes(url: &str, postgres: bool) -> (u64, u64) {
    if postgres {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let index: i64 = sqlx::query_scalar(
            "select cast(pg_total_relation_size('product_search_documents') + pg_total_relation_size('search_words') \
             as bigint)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let tables: i64 = sqlx::query_scalar(
            "select cast(pg_total_relation_size('products') + pg_total_relation_size('categories') as bigint)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        (u64::try_from(index).unwrap(), u64::try_from(tables).unwrap())
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let size = |pattern: &'static str| {
            let pool = pool.clone();
            async move {
                let bytes: i64 =
                    sqlx::query_scalar("select coalesce(sum(pgsize), 0) from dbstat where name like ?1 or name in (select name from sqlite_master where tbl_name like ?1)")
                        .bind(pattern)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                u64::try_from(bytes).unwrap()
            }
        };
        let index = size("product_search%").await + size("search_words").await;
        let tables = size("products").await + size("categories").await;
        pool.close().await;
        (index, tables)
    }
}

/// The baseline the seed warns about: a substring scan of name and description.
#[derive(Clone)]
enum Naive {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

async fn naive_pool(url: &str, postgres: bool, connections: u32) -> Naive {
    if postgres {
        Naive::Postgres(sqlx::postgres::PgPoolOptions::new().max_connections(connections).connect(url).await.unwrap())
    } else {
        Naive::Sqlite(sqlx::sqlite::SqlitePoolOptions::new().max_connections(connections).connect(url).await.unwrap())
    }
}

impl Naive {
    /// One page (20, newest first) and the total, as the product list would answer.
    async fn search(&self, word: &str) -> u64 {
        let pattern = format!("%{word}%");
        match self {
            Self::Sqlite(pool) => {
                let total: i64 = sqlx::query_scalar(
                    "select count(*) from products where status = 'active' and (name like ?1 or description like ?1)",
                )
                .bind(&pattern)
                .fetch_one(pool)
                .await
                .unwrap();
                let _: Vec<(String,)> = sqlx::query_as(
                    "select name from products where status = 'active' and (name like ?1 or description like ?1) \
                     order by created_at desc limit 20",
                )
                .bind(&pattern)
                .fetch_all(pool)
                .await
                .unwrap();
                u64::try_from(total).unwrap()
            }
            Self::Postgres(pool) => {
                let total: i64 = sqlx::query_scalar(
                    "select count(*) from products where status = 'active' and (name ilike $1 or description ilike $1)",
                )
                .bind(&pattern)
                .fetch_one(pool)
                .await
                .unwrap();
                let _: Vec<(String,)> = sqlx::query_as(
                    "select name from products where status = 'active' and (name ilike $1 or description ilike $1) \
                     order by created_at desc limit 20",
                )
                .bind(&pattern)
                .fetch_all(pool)
                .await
                .unwrap();
                u64::try_from(total).unwrap()
            }
        }
    }
}
