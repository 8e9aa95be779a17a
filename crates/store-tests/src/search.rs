//! Contract cases for search: ranking, every typo rule, suggestions, facets, and the index
//! following catalog writes (rolled-back writes leave nothing findable). They run through
//! `shop::search::SearchService` against the adapter's `SearchIndex`, so the rules the
//! service adds and the SQL the adapter runs are tested together.

use std::sync::Arc;
use std::time::Duration;

use shop::catalog::{
    IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery, ProductStatus, SearchBoost, Slug, Stock,
    Text,
};
use shop::ports::SearchIndex;
use shop::search::{FacetRequest, SearchOrder, SearchResults, SearchService, SearchSettings, SearchText};
use shop::{Conflict, PageRequest, StoreError};
use uuid::Uuid;

use crate::{SharedStore, at};

/// The store and its search index (the same adapter, seen through both ports).
pub type SharedIndex = Arc<dyn SearchIndex>;

/// Generates one `#[tokio::test]` per search contract case. `$make` evaluates to a fresh,
/// migrated `(Arc<dyn Store>, Arc<dyn SearchIndex>, guard)`.
#[macro_export]
macro_rules! search_contract_tests {
    ($make:expr) => {
        $crate::search_contract_tests!(@cases $make;
            search_ranks_name_above_category_above_description, exact_words_rank_above_typos,
            an_unknown_word_is_corrected_even_when_the_others_match,
            more_matched_words_rank_first_then_boost_then_stock, typo_rules_follow_the_length_table,
            typo_fallback_runs_only_below_the_threshold, search_combines_with_filters_sorts_and_pages,
            suggestions_complete_the_last_word, facets_count_what_the_filters_would_list,
            the_index_follows_catalog_writes, rolled_back_writes_are_not_findable,
            operator_characters_are_text, concurrent_removals_of_a_word_keep_the_vocabulary_exact
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, index, guard) = $make.await;
                $crate::$case(store.clone(), index).await;
                store.close().await;
                drop(guard);
            }
        )*
    };
}

fn service(index: SharedIndex) -> SearchService {
    // Refresh the vocabulary on every use: each case reads its own writes at once.
    SearchService::new(index, SearchSettings { vocabulary_refresh: Duration::ZERO, ..SearchSettings::default() })
}

async fn category(store: &SharedStore, name: &str) -> Uuid {
    let slug = Slug::from_name(name).unwrap();
    let category = NewCategory {
        id: shop::new_id(),
        name: Text::name(name).unwrap(),
        slug,
        description: Text::description("").unwrap(),
        created_at: at(0),
    };
    store.insert_category(&category).await.unwrap().id
}

async fn product(store: &SharedStore, category_id: Uuid, name: &str, description: &str) -> Product {
    product_with(store, category_id, name, description, 1_000, 5, 0).await
}

async fn product_with(
    store: &SharedStore,
    category_id: Uuid,
    name: &str,
    description: &str,
    price_minor: i64,
    stock: i64,
    boost: i64,
) -> Product {
    let product = NewProduct {
        id: shop::new_id(),
        name: Text::name(name).unwrap(),
        slug: Slug::parse(&format!("{}-{}", Slug::from_name(name).unwrap().as_str(), Uuid::now_v7().simple())).unwrap(),
        description: Text::description(description).unwrap(),
        price: shop::catalog::Money::from_minor(price_minor, shop::catalog::Currency::parse("EUR").unwrap()).unwrap(),
        stock: Stock::new(stock).unwrap(),
        category_id,
        search_boost: SearchBoost::new(boost).unwrap(),
        created_at: at(0),
    };
    store.insert_product(&product).await.unwrap()
}

fn active(limit: u32) -> ProductQuery {
    ProductQuery {
        page: PageRequest::new(Some(1), Some(limit)).unwrap(),
        status: Some(ProductStatus::Active),
        ..ProductQuery::default()
    }
}

async fn find(service: &SearchService, text: &str) -> SearchResults {
    find_in(service, text, &active(50)).await
}

async fn find_in(service: &SearchService, text: &str, filters: &ProductQuery) -> SearchResults {
    let text = SearchText::parse(text).unwrap();
    service.search(&text, filters, SearchOrder::Relevance, FacetRequest::default()).await.unwrap()
}

fn names(results: &SearchResults) -> Vec<&str> {
    results.page.items.iter().map(|hit| hit.product.name.as_str()).collect()
}

pub async fn search_ranks_name_above_category_above_description(store: SharedStore, index: SharedIndex) {
    let laptops = category(&store, "Laptops").await;
    let accessories = category(&store, "Accessories").await;
    let bags = category(&store, "Bags").await;
    product(&store, bags, "Canvas Backpack", "Fits a 15-inch laptop.").await;
    product(&store, laptops, "Gaming Rig", "Fast and loud.").await;
    product(&store, accessories, "Laptop Stand", "Aluminium.").await;
    product(&store, accessories, "Desk Lamp", "Warm light.").await;
    let service = service(index);
    let results = find(&service, "LAPTOPS").await;
    assert_eq!(names(&results), ["Laptop Stand", "Gaming Rig", "Canvas Backpack"]);
    assert_eq!(results.page.total, 3);
    assert!(!results.typo_fallback || results.corrected_query.is_none());
    let stand = &results.page.items[0];
    assert_eq!((stand.matched_words, stand.typos), (1, 0));
    assert_eq!(stand.name_highlight, "<mark>Laptop</mark> Stand");
    assert_eq!(results.page.items[2].description_snippet, "Fits a 15-inch <mark>laptop</mark>.");
    // Stemming and folding: "café" finds "Cafe", "lamps" finds "Lamp".
    product(&store, accessories, "Cafe Table", "").await;
    assert_eq!(names(&find(&service, "café").await), ["Cafe Table"]);
    assert_eq!(names(&find(&service, "lamps").await), ["Desk Lamp"]);
}

pub async fn exact_words_rank_above_typos(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    product(&store, things, "Laptop Pro", "").await;
    product(&store, things, "Lapton Pro", "").await;
    let service = service(index);
    let results = find(&service, "lapton").await;
    assert_eq!(names(&results), ["Lapton Pro", "Laptop Pro"]);
    assert!(results.typo_fallback);
    assert_eq!(results.page.items[1].typos, 1);
    // "lapton" is a word of the catalog: nothing was corrected.
    assert_eq!(results.corrected_query, None);
    let corrected = find(&service, "labtop pro").await;
    assert_eq!(corrected.corrected_query.as_deref(), Some("laptop pro"));
    assert_eq!(names(&corrected)[0], "Laptop Pro");
}

pub async fn an_unknown_word_is_corrected_even_when_the_others_match(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    for number in 0..12 {
        product(&store, things, &format!("Bag {number}"), "").await;
    }
    product(&store, things, "Laptop Bag", "").await;
    product(&store, things, "Cotton Shirts", "").await;
    product(&store, things, "Denim Skirt", "").await;
    let service = service(index);
    // Thirteen bags match exactly, more than the fallback threshold; "labtop" matches nothing.
    let results = find(&service, "labtop bag").await;
    assert!(results.typo_fallback);
    assert_eq!(results.corrected_query.as_deref(), Some("laptop bag"));
    assert_eq!(names(&results)[0], "Laptop Bag");
    // "shirt" is in the catalog as "Shirts": found as typed, nothing to correct, though
    // "skirt" is one typo away (and found after it).
    let shirt = find(&service, "shirt").await;
    assert_eq!(shirt.corrected_query, None);
    assert_eq!(names(&shirt), ["Cotton Shirts", "Denim Skirt"]);
}

pub async fn more_matched_words_rank_first_then_boost_then_stock(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    product_with(&store, things, "Red Mug", "", 1_000, 5, 0).await;
    product_with(&store, things, "Red Wool Scarf", "", 1_000, 5, 0).await;
    product_with(&store, things, "Wool Socks", "", 1_000, 0, 0).await;
    product_with(&store, things, "Wool Hat", "", 1_000, 5, 0).await;
    product_with(&store, things, "Wool Gloves", "", 1_000, 5, 20).await;
    let service = service(index);
    let results = find(&service, "red wool").await;
    let found = names(&results);
    assert_eq!(found[0], "Red Wool Scarf", "{found:?}");
    assert_eq!(results.page.items[0].matched_words, 2);
    // One word each, all in the name: the merchant's boost first, then in stock before sold
    // out (the two in stock without a boost are ordered by the backend's relevance score).
    assert_eq!(found[1], "Wool Gloves", "{found:?}");
    let mut middle = found[2..4].to_vec();
    middle.sort_unstable();
    assert_eq!(middle, ["Red Mug", "Wool Hat"], "{found:?}");
    assert_eq!(found[4], "Wool Socks", "{found:?}");
}

pub async fn typo_rules_follow_the_length_table(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    for name in ["Bags", "Table", "Keyboard", "Headphone", "Mouse", "Laptop"] {
        product(&store, things, name, "").await;
    }
    let service = service(index);
    let cases: [(&str, Option<&str>); 12] = [
        // 1–4 letters: exact only.
        ("bags", Some("Bags")),
        ("bagz", None),
        // 5–8 letters: one typo; a swap of adjacent letters is one.
        ("tabel", Some("Table")),
        ("tabxy", None),
        ("keybaord", Some("Keyboard")),
        ("kexbaord", None),
        ("lpatop", Some("Laptop")),
        // 9 and more: two typos.
        ("hedphonne", Some("Headphone")),
        ("hdphnone", None),
        // A typo on the first letter counts as two.
        ("nouse", None),
        ("geadphone", Some("Headphone")),
        ("labtop", Some("Laptop")),
    ];
    for (query, expected) in cases {
        let results = find(&service, query).await;
        match expected {
            Some(name) => assert_eq!(names(&results), [name], "{query}"),
            None => assert!(results.page.items.is_empty(), "{query} found {:?}", names(&results)),
        }
    }
}

pub async fn typo_fallback_runs_only_below_the_threshold(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    for number in 0..3 {
        product(&store, things, &format!("Laptop {number}"), "").await;
    }
    product(&store, things, "Lapton", "").await;
    let strict = SearchService::new(
        index,
        SearchSettings { typo_fallback_below: 1, vocabulary_refresh: Duration::ZERO, ..SearchSettings::default() },
    );
    // Exact matching found one hit, not fewer than one: no typo search.
    let results = find(&strict, "lapton").await;
    assert_eq!(names(&results), ["Lapton"]);
    assert!(!results.typo_fallback);
    // Nothing exact: the typo search runs.
    let results = find(&strict, "laptip").await;
    assert!(results.typo_fallback);
    assert_eq!(results.page.total, 3);
}

pub async fn search_combines_with_filters_sorts_and_pages(store: SharedStore, index: SharedIndex) {
    let laptops = category(&store, "Laptops").await;
    let bags = category(&store, "Bags").await;
    product_with(&store, laptops, "Cheap Laptop", "", 30_000, 0, 0).await;
    product_with(&store, laptops, "Fast Laptop", "", 120_000, 3, 0).await;
    product_with(&store, bags, "Laptop Bag", "", 4_000, 8, 0).await;
    let archived = product_with(&store, laptops, "Old Laptop", "", 10_000, 1, 0).await;
    let archive = ProductChanges { status: Some(ProductStatus::Archived), ..ProductChanges::default() };
    store.update_product(archived.id, &archive, None, at(1)).await.unwrap();
    let service = service(index);
    let mut filters = active(50);
    filters.category = Some(IdOrSlug::Id(laptops));
    filters.in_stock = Some(true);
    assert_eq!(names(&find_in(&service, "laptop", &filters).await), ["Fast Laptop"]);
    let mut filters = active(50);
    filters.max_price_minor = Some(30_000);
    let mut found =
        names(&find_in(&service, "laptop", &filters).await).into_iter().map(str::to_owned).collect::<Vec<_>>();
    found.sort();
    assert_eq!(found, ["Cheap Laptop", "Laptop Bag"]);
    // Staff see archived hits when they ask for every status.
    let mut every = active(50);
    every.status = None;
    assert_eq!(find_in(&service, "laptop", &every).await.page.total, 4);
    // A column order instead of relevance, and pages.
    let text = SearchText::parse("laptop").unwrap();
    let by_price = SearchOrder::By(shop::catalog::ProductSort::Price, shop::SortOrder::Asc);
    let first = ProductQuery { page: PageRequest::new(Some(1), Some(2)).unwrap(), ..active(2) };
    let page = service.search(&text, &first, by_price, FacetRequest::default()).await.unwrap();
    let found: Vec<&str> = page.page.items.iter().map(|hit| hit.product.name.as_str()).collect();
    assert_eq!(found, ["Laptop Bag", "Cheap Laptop"]);
    assert_eq!(page.page.total, 3);
    let second = ProductQuery { page: PageRequest::new(Some(2), Some(2)).unwrap(), ..active(2) };
    let page = service.search(&text, &second, by_price, FacetRequest::default()).await.unwrap();
    let found: Vec<&str> = page.page.items.iter().map(|hit| hit.product.name.as_str()).collect();
    assert_eq!(found, ["Fast Laptop"]);
    // Past the last page: no hits, and still the total.
    let past = ProductQuery { page: PageRequest::new(Some(5), Some(2)).unwrap(), ..active(2) };
    for order in [by_price, SearchOrder::Relevance] {
        let page = service.search(&text, &past, order, FacetRequest::default()).await.unwrap();
        assert!(page.page.items.is_empty());
        assert_eq!(page.page.total, 3);
    }
}

pub async fn suggestions_complete_the_last_word(store: SharedStore, index: SharedIndex) {
    let laptops = category(&store, "Laptops").await;
    let lamps = category(&store, "Lamps").await;
    product(&store, laptops, "Gaming Laptop", "").await;
    product(&store, laptops, "Office Laptop", "").await;
    product(&store, lamps, "Lava Lamp", "").await;
    let archived = product(&store, lamps, "Laptop Lamp", "").await;
    let archive = ProductChanges { status: Some(ProductStatus::Archived), ..ProductChanges::default() };
    store.update_product(archived.id, &archive, None, at(1)).await.unwrap();
    let service = service(index);
    let suggest = |text: &'static str| {
        let service = service.clone();
        async move { service.suggest(&SearchText::parse(text).unwrap(), 8).await.unwrap() }
    };
    let lap = suggest("lap").await;
    let mut products: Vec<&str> = lap.products.iter().map(|hit| hit.product.name.as_str()).collect();
    products.sort_unstable();
    assert_eq!(products, ["Gaming Laptop", "Office Laptop"], "archived products are not suggested");
    let categories: Vec<&str> = lap.categories.iter().map(|category| category.name.as_str()).collect();
    assert_eq!(categories, ["Laptops"]);
    assert_eq!(lap.products[0].name_highlight.matches("<mark>").count(), 1);
    // Earlier words are complete and typo-tolerant; the ranking puts both words first.
    let gaming = suggest("gamign lap").await;
    assert_eq!(gaming.products[0].product.name.as_str(), "Gaming Laptop");
    assert_eq!(gaming.products[0].name_highlight, "<mark>Gaming</mark> <mark>Laptop</mark>");
    // A complete last word (followed by a space) is not a prefix.
    let la = suggest("la ").await;
    assert!(la.products.is_empty() && la.categories.is_empty());
    let lamps = suggest("lam").await;
    assert_eq!(lamps.categories.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Lamps"]);
    assert!(suggest("zzz").await.products.is_empty());
}

pub async fn facets_count_what_the_filters_would_list(store: SharedStore, index: SharedIndex) {
    let laptops = category(&store, "Laptops").await;
    let bags = category(&store, "Bags").await;
    let lamps = category(&store, "Lamps").await;
    product_with(&store, laptops, "Cheap Laptop", "", 30_000, 0, 0).await;
    product_with(&store, laptops, "Fast Laptop", "", 120_000, 3, 0).await;
    product_with(&store, laptops, "Small Laptop", "", 60_000, 2, 0).await;
    product_with(&store, bags, "Laptop Bag", "", 4_000, 8, 0).await;
    product_with(&store, lamps, "Desk Lamp", "", 2_000, 8, 0).await;
    let service = service(index);
    let all = FacetRequest { category: true, price: true, in_stock: true };
    let text = SearchText::parse("laptop").unwrap();
    let results = service.search(&text, &active(50), SearchOrder::Relevance, all).await.unwrap();
    let facets = results.facets.unwrap();
    let categories = facets.categories.unwrap();
    assert_eq!(
        categories.iter().map(|c| (c.name.as_str(), c.count)).collect::<Vec<_>>(),
        [("Laptops", 3), ("Bags", 1)]
    );
    for counted in &categories {
        let mut filters = active(50);
        filters.category = Some(IdOrSlug::Id(counted.id));
        assert_eq!(find_in(&service, "laptop", &filters).await.page.total, counted.count, "{}", counted.name);
    }
    let prices = facets.prices.unwrap();
    assert_eq!(prices.len(), shop::search::PRICE_BUCKETS.len());
    assert_eq!(prices.iter().map(|bucket| bucket.count).sum::<u64>(), results.page.total);
    for bucket in &prices {
        let mut filters = active(50);
        filters.min_price_minor = Some(bucket.from_minor);
        filters.max_price_minor = bucket.to_minor.map(|to| to - 1);
        assert_eq!(find_in(&service, "laptop", &filters).await.page.total, bucket.count, "{bucket:?}");
    }
    let (in_stock, sold_out) = facets.stock.unwrap();
    let mut filters = active(50);
    filters.in_stock = Some(true);
    assert_eq!(find_in(&service, "laptop", &filters).await.page.total, in_stock);
    assert_eq!((in_stock, sold_out), (3, 1));
    // Without a query: the facets of the filtered list.
    let every = service.facets(&active(50), all).await.unwrap();
    assert_eq!(every.stock, Some((4, 1)));
    let per_category = every.categories.unwrap();
    assert_eq!(
        per_category.iter().map(|c| (c.name.as_str(), c.count)).collect::<Vec<_>>(),
        [("Laptops", 3), ("Bags", 1), ("Lamps", 1)]
    );
}

pub async fn the_index_follows_catalog_writes(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    let other = category(&store, "Gadgets").await;
    let lamp = product(&store, things, "Desk Lamp", "").await;
    let service = service(index);
    assert_eq!(names(&find(&service, "lamp").await), ["Desk Lamp"]);
    // Renamed: found by the new name, and the old one's typo corrections are gone too.
    let rename = ProductChanges { name: Some(Text::name("Floor Light").unwrap()), ..ProductChanges::default() };
    store.update_product(lamp.id, &rename, None, at(1)).await.unwrap();
    assert!(find(&service, "lamp").await.page.items.is_empty());
    assert!(find(&service, "lampp").await.page.items.is_empty());
    assert_eq!(names(&find(&service, "light").await), ["Floor Light"]);
    // Sold out (stock is what checkout changes): the stock filter and facets see it at once.
    let sold_out = ProductChanges { stock: Some(Stock::new(0).unwrap()), ..ProductChanges::default() };
    store.update_product(lamp.id, &sold_out, None, at(1)).await.unwrap();
    let mut in_stock = active(50);
    in_stock.in_stock = Some(true);
    assert!(find_in(&service, "light", &in_stock).await.page.items.is_empty());
    in_stock.in_stock = Some(false);
    assert_eq!(names(&find_in(&service, "light", &in_stock).await), ["Floor Light"]);
    // Moved to another category: found by its new category's name.
    let moved = ProductChanges { category_id: Some(other), ..ProductChanges::default() };
    store.update_product(lamp.id, &moved, None, at(2)).await.unwrap();
    assert_eq!(names(&find(&service, "gadgets").await), ["Floor Light"]);
    assert!(find(&service, "things").await.page.items.is_empty());
    // The category renamed: its products follow.
    let renamed =
        shop::catalog::CategoryChanges { name: Some(Text::name("Illumination").unwrap()), ..Default::default() };
    store.update_category(other, &renamed, at(3)).await.unwrap();
    assert_eq!(names(&find(&service, "illumination").await), ["Floor Light"]);
    assert!(find(&service, "gadgets").await.page.items.is_empty());
    // Archived: gone from the storefront's results at once.
    let archive = ProductChanges { status: Some(ProductStatus::Archived), ..ProductChanges::default() };
    store.update_product(lamp.id, &archive, None, at(4)).await.unwrap();
    assert!(find(&service, "light").await.page.items.is_empty());
    // Deleted: gone for everyone.
    store.delete_product(lamp.id).await.unwrap();
    let mut every = active(50);
    every.status = None;
    assert!(find_in(&service, "light", &every).await.page.items.is_empty());
}

pub async fn rolled_back_writes_are_not_findable(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    let taken = product(&store, things, "Desk Lamp", "").await;
    let service = service(index.clone());
    // A product whose insert fails (taken slug, unknown category) leaves no document and no words.
    let mut duplicate = NewProduct {
        id: shop::new_id(),
        name: Text::name("Zephyr Fan").unwrap(),
        slug: taken.slug.clone(),
        description: Text::description("Quiet xylophonic breeze.").unwrap(),
        price: taken.price,
        stock: Stock::new(1).unwrap(),
        category_id: things,
        search_boost: SearchBoost::default(),
        created_at: at(1),
    };
    let error = store.insert_product(&duplicate).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(Conflict::ProductSlugTaken)), "{error:?}");
    duplicate.slug = Slug::parse("zephyr-fan").unwrap();
    duplicate.category_id = Uuid::now_v7();
    store.insert_product(&duplicate).await.unwrap_err();
    let mut every = active(50);
    every.status = None;
    assert!(find_in(&service, "zephyr", &every).await.page.items.is_empty());
    let (_, words) = index.vocabulary().await.unwrap();
    assert!(!words.iter().any(|(word, _)| word == "zephyr" || word == "xylophonic"), "{words:?}");
    // A rename refused by its version check changes nothing either.
    let rename = ProductChanges { name: Some(Text::name("Zephyr Lamp").unwrap()), ..ProductChanges::default() };
    assert!(store.update_product(taken.id, &rename, Some(taken.version + 7), at(2)).await.unwrap().is_none());
    assert!(find_in(&service, "zephyr", &every).await.page.items.is_empty());
    assert_eq!(names(&find(&service, "desk").await), ["Desk Lamp"]);
}

pub async fn operator_characters_are_text(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    product(&store, things, "Laptop Stand", "Holds a laptop: NEAR the desk, \"stable\" & firm.").await;
    let service = service(index);
    let hostile = [
        "\"laptop",
        "laptop*",
        "-laptop",
        "laptop NEAR stand",
        "NEAR(laptop stand)",
        "name:laptop",
        "laptop & stand",
        "laptop | stand",
        "!laptop",
        "(laptop",
        "laptop)",
        "'laptop'",
        "laptop'); drop table products; --",
        "^laptop",
        "laptop:*",
        "{laptop}",
        "laptop AND",
        "OR laptop",
        "NOT laptop",
        "laptop\\",
        "%laptop%",
        "laptop <-> stand",
        "laptop \u{0}",
        "💻 laptop",
    ];
    for text in hostile {
        let results = find(&service, text).await;
        assert!(
            results.page.items.iter().any(|hit| hit.product.name.as_str() == "Laptop Stand"),
            "{text:?} found {:?}",
            names(&results)
        );
    }
    // Anything with a letter or digit runs (and finds what its words find).
    for text in ["lap_top", "a*b*c", "\"unbalanced", "x:y:z", "1 & 2", "ü", "\u{10FFFF}7"] {
        find(&service, text).await;
    }
    // Words that look like operators are ordinary words.
    assert_eq!(names(&find(&service, "near").await), ["Laptop Stand"]);
    for text in ["***", "\"\"", "-", "()", " "] {
        assert!(SearchText::parse(text).is_err(), "{text:?}");
    }
}

pub async fn concurrent_removals_of_a_word_keep_the_vocabulary_exact(store: SharedStore, index: SharedIndex) {
    let things = category(&store, "Things").await;
    let mut products = Vec::new();
    for number in 0..8 {
        products.push(product(&store, things, &format!("Quokka Plush {number}"), "Soft quokka.").await);
    }
    // Every delete removes "quokka" and "plush" once; none may fail on the count's check, and
    // the last one takes the words out of the vocabulary.
    let deletes = products.iter().map(|product| {
        let store = store.clone();
        let id = product.id;
        async move { store.delete_product(id).await }
    });
    let mut tasks = Vec::new();
    for delete in deletes {
        tasks.push(tokio::spawn(delete));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (_, words) = index.vocabulary().await.unwrap();
    assert!(!words.iter().any(|(word, _)| word == "quokka" || word == "plush"), "{words:?}");
    assert!(words.iter().all(|(_, documents)| *documents > 0), "{words:?}");
}
