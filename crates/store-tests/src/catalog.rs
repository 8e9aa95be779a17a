//! Contract cases for categories and products.

use shop::catalog::{
    Category, CategoryChanges, CategorySort, Currency, IdOrSlug, Money, NewCategory, NewProduct, Product,
    ProductChanges, ProductQuery, ProductSort, ProductStatus, Slug, Stock, Text,
};
use shop::{Conflict, PageRequest, SortOrder, StoreError};
use uuid::Uuid;

use crate::{SharedStore, at};

pub async fn add_category(store: &SharedStore, slug: &str, seconds: i64) -> Category {
    let category = NewCategory {
        id: shop::new_id(),
        name: Text::name(&format!("Category {slug}")).unwrap(),
        slug: Slug::parse(slug).unwrap(),
        description: Text::description("").unwrap(),
        created_at: at(seconds),
    };
    store.insert_category(&category).await.unwrap()
}

pub fn new_product(category_id: Uuid, slug: &str, price_minor: i64, stock: i64, seconds: i64) -> NewProduct {
    NewProduct {
        id: shop::new_id(),
        name: Text::name(&format!("Product {slug}")).unwrap(),
        slug: Slug::parse(slug).unwrap(),
        description: Text::description("A fine thing.").unwrap(),
        price: Money::from_minor(price_minor, Currency::parse("EUR").unwrap()).unwrap(),
        stock: Stock::new(stock).unwrap(),
        category_id,
        search_boost: shop::catalog::SearchBoost::default(),
        created_at: at(seconds),
    }
}

pub async fn categories_round_trip(store: SharedStore) {
    let category = add_category(&store, "books", 0).await;
    assert_eq!(category.slug.as_str(), "books");
    assert_eq!(category.created_at, at(0));
    let by_id = store.find_category(&IdOrSlug::Id(category.id)).await.unwrap();
    let by_slug = store.find_category(&IdOrSlug::Slug(Slug::parse("books").unwrap())).await.unwrap();
    assert_eq!(by_id, Some(category.clone()));
    assert_eq!(by_slug, Some(category.clone()));
    let changes = CategoryChanges {
        name: Some(Text::name("Books & Comics").unwrap()),
        description: Some(Text::description("Paper.").unwrap()),
        ..CategoryChanges::default()
    };
    let updated = store.update_category(category.id, &changes, at(30)).await.unwrap();
    assert_eq!(updated.name.as_str(), "Books & Comics");
    assert_eq!(updated.slug.as_str(), "books");
    assert_eq!(updated.description.as_str(), "Paper.");
    assert_eq!(updated.updated_at, at(30));
    let error = store.update_category(Uuid::now_v7(), &changes, at(30)).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
}

pub async fn duplicate_category_slug_is_a_conflict(store: SharedStore) {
    add_category(&store, "books", 0).await;
    let other = add_category(&store, "games", 1).await;
    let duplicate = NewCategory {
        id: shop::new_id(),
        name: Text::name("Books again").unwrap(),
        slug: Slug::parse("books").unwrap(),
        description: Text::description("").unwrap(),
        created_at: at(2),
    };
    let error = store.insert_category(&duplicate).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::CategorySlugTaken)), "{error:?}");
    let rename = CategoryChanges { slug: Some(Slug::parse("books").unwrap()), ..CategoryChanges::default() };
    let error = store.update_category(other.id, &rename, at(3)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::CategorySlugTaken)), "{error:?}");
}

pub async fn categories_list_sorted_and_paged(store: SharedStore) {
    for (index, slug) in ["cameras", "apples", "books"].iter().enumerate() {
        add_category(&store, slug, index as i64).await;
    }
    let by_name = store
        .list_categories(PageRequest::new(Some(1), Some(2)).unwrap(), CategorySort::Name, SortOrder::Asc)
        .await
        .unwrap();
    assert_eq!(by_name.total, 3);
    let slugs: Vec<&str> = by_name.items.iter().map(|c| c.slug.as_str()).collect();
    assert_eq!(slugs, ["apples", "books"]);
    let newest = store.list_categories(PageRequest::default(), CategorySort::CreatedAt, SortOrder::Desc).await.unwrap();
    let slugs: Vec<&str> = newest.items.iter().map(|c| c.slug.as_str()).collect();
    assert_eq!(slugs, ["books", "apples", "cameras"]);
    let beyond = store
        .list_categories(PageRequest::new(Some(5), Some(2)).unwrap(), CategorySort::Name, SortOrder::Asc)
        .await
        .unwrap();
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 3);
}

pub async fn category_in_use_cannot_be_deleted(store: SharedStore) {
    let used = add_category(&store, "books", 0).await;
    let unused = add_category(&store, "games", 0).await;
    store.insert_product(&new_product(used.id, "dune", 999, 3, 0)).await.unwrap();
    let error = store.delete_category(used.id).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(Conflict::CategoryInUse)), "unexpected {error:?}");
    assert!(store.find_category(&IdOrSlug::Id(used.id)).await.unwrap().is_some());
    store.delete_category(unused.id).await.unwrap();
    assert!(store.find_category(&IdOrSlug::Id(unused.id)).await.unwrap().is_none());
    let error = store.delete_category(unused.id).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
}

pub async fn products_round_trip(store: SharedStore) {
    let category = add_category(&store, "books", 0).await;
    let new = new_product(category.id, "dune", 1_299, 7, 5);
    let product = store.insert_product(&new).await.unwrap();
    assert_eq!(product.id, new.id);
    assert_eq!(product.price.minor(), 1_299);
    assert_eq!(product.price.currency().as_str(), "EUR");
    assert_eq!(product.stock.units(), 7);
    assert_eq!(product.status, ProductStatus::Active);
    assert_eq!(product.version, 1);
    assert_eq!(product.category_id, category.id);
    assert_eq!(product.created_at, at(5));
    assert_eq!(store.find_product(&IdOrSlug::Id(product.id)).await.unwrap(), Some(product.clone()));
    assert_eq!(store.find_product(&IdOrSlug::Slug(Slug::parse("dune").unwrap())).await.unwrap(), Some(product));
    assert!(store.find_product(&IdOrSlug::Id(Uuid::now_v7())).await.unwrap().is_none());
}

pub async fn product_constraints_are_named(store: SharedStore) {
    let category = add_category(&store, "books", 0).await;
    store.insert_product(&new_product(category.id, "dune", 999, 1, 0)).await.unwrap();
    let error = store.insert_product(&new_product(category.id, "dune", 999, 1, 1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::ProductSlugTaken)), "{error:?}");
    let error = store.insert_product(&new_product(Uuid::now_v7(), "emma", 999, 1, 1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::UnknownCategory)), "{error:?}");
}

async fn seed_products(store: &SharedStore) -> (Category, Category, Vec<Product>) {
    let books = add_category(store, "books", 0).await;
    let games = add_category(store, "games", 0).await;
    let mut products = Vec::new();
    for (index, (category, slug, price, stock)) in [
        (&books, "dune", 1_299, 5),
        (&books, "emma", 499, 0),
        (&games, "chess", 2_500, 2),
        (&games, "go", 4_000, 1),
        (&books, "ulysses", 1_500, 9),
    ]
    .into_iter()
    .enumerate()
    {
        products.push(store.insert_product(&new_product(category.id, slug, price, stock, index as i64)).await.unwrap());
    }
    let archive = ProductChanges { status: Some(ProductStatus::Archived), ..ProductChanges::default() };
    let archived = store.update_product(products[4].id, &archive, None, at(100)).await.unwrap().unwrap();
    products[4] = archived;
    (books, games, products)
}

fn slugs(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.slug.as_str()).collect()
}

pub async fn product_list_filters(store: SharedStore) {
    let (books, _games, _) = seed_products(&store).await;
    let active = ProductQuery { status: Some(ProductStatus::Active), ..ProductQuery::default() };
    let listed = store.list_products(&active).await.unwrap();
    assert_eq!(listed.total, 4, "archived products are not active");
    let everything = store.list_products(&ProductQuery::default()).await.unwrap();
    assert_eq!(everything.total, 5);
    let by_slug = ProductQuery { category: Some(IdOrSlug::Slug(Slug::parse("books").unwrap())), ..active.clone() };
    assert_eq!(slugs(&store.list_products(&by_slug).await.unwrap().items), ["emma", "dune"]);
    let by_id = ProductQuery { category: Some(IdOrSlug::Id(books.id)), ..active.clone() };
    assert_eq!(store.list_products(&by_id).await.unwrap().total, 2);
    let unknown = ProductQuery { category: Some(IdOrSlug::Slug(Slug::parse("toys").unwrap())), ..active.clone() };
    assert_eq!(store.list_products(&unknown).await.unwrap().total, 0);
    let price_range = ProductQuery { min_price_minor: Some(1_299), max_price_minor: Some(2_500), ..active.clone() };
    assert_eq!(slugs(&store.list_products(&price_range).await.unwrap().items), ["chess", "dune"], "bounds inclusive");
    let in_stock = ProductQuery { in_stock: Some(true), ..active.clone() };
    assert_eq!(store.list_products(&in_stock).await.unwrap().total, 3);
    let sold_out = ProductQuery { in_stock: Some(false), ..active.clone() };
    assert_eq!(slugs(&store.list_products(&sold_out).await.unwrap().items), ["emma"]);
    let archived = ProductQuery { status: Some(ProductStatus::Archived), ..ProductQuery::default() };
    assert_eq!(slugs(&store.list_products(&archived).await.unwrap().items), ["ulysses"]);
}

pub async fn product_list_sorts_and_pages(store: SharedStore) {
    seed_products(&store).await;
    let active = ProductQuery { status: Some(ProductStatus::Active), ..ProductQuery::default() };
    let by_price = ProductQuery { sort_by: ProductSort::Price, sort_order: SortOrder::Asc, ..active.clone() };
    assert_eq!(slugs(&store.list_products(&by_price).await.unwrap().items), ["emma", "dune", "chess", "go"]);
    let by_name = ProductQuery { sort_by: ProductSort::Name, sort_order: SortOrder::Desc, ..active.clone() };
    assert_eq!(slugs(&store.list_products(&by_name).await.unwrap().items), ["go", "emma", "dune", "chess"]);
    let by_stock = ProductQuery { sort_by: ProductSort::Stock, sort_order: SortOrder::Desc, ..active.clone() };
    assert_eq!(slugs(&store.list_products(&by_stock).await.unwrap().items), ["dune", "chess", "go", "emma"]);
    let newest = store.list_products(&active).await.unwrap();
    assert_eq!(slugs(&newest.items), ["go", "chess", "emma", "dune"], "default: newest first");
    let page_two = ProductQuery {
        page: PageRequest::new(Some(2), Some(3)).unwrap(),
        sort_by: ProductSort::Price,
        sort_order: SortOrder::Asc,
        ..active.clone()
    };
    let page = store.list_products(&page_two).await.unwrap();
    assert_eq!(slugs(&page.items), ["go"]);
    assert_eq!(page.total, 4);
    assert_eq!(page.total_pages(), 2);
}

pub async fn conditional_product_update(store: SharedStore) {
    let category = add_category(&store, "books", 0).await;
    let product = store.insert_product(&new_product(category.id, "dune", 1_299, 5, 0)).await.unwrap();
    let changes = ProductChanges {
        price: Some(Money::from_minor(1_099, Currency::parse("USD").unwrap()).unwrap()),
        stock: Some(Stock::new(0).unwrap()),
        ..ProductChanges::default()
    };
    let updated = store.update_product(product.id, &changes, Some(1), at(10)).await.unwrap().unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.price.minor(), 1_099);
    assert_eq!(updated.price.currency().as_str(), "USD");
    assert_eq!(updated.stock.units(), 0);
    assert_eq!(updated.name, product.name, "unchanged fields stay");
    assert_eq!(updated.updated_at, at(10));
    assert_eq!(updated.created_at, at(0));
    let stale = store.update_product(product.id, &changes, Some(1), at(20)).await.unwrap();
    assert!(stale.is_none(), "a stale version must not update");
    let unconditional = store.update_product(product.id, &ProductChanges::default(), None, at(30)).await.unwrap();
    assert_eq!(unconditional.map(|p| p.version), Some(3));
    assert!(store.update_product(Uuid::now_v7(), &changes, None, at(40)).await.unwrap().is_none());
    let bad_category = ProductChanges { category_id: Some(Uuid::now_v7()), ..ProductChanges::default() };
    let error = store.update_product(product.id, &bad_category, None, at(50)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::UnknownCategory)), "{error:?}");
}

pub async fn product_delete(store: SharedStore) {
    let category = add_category(&store, "books", 0).await;
    let product = store.insert_product(&new_product(category.id, "dune", 1_299, 5, 0)).await.unwrap();
    store.delete_product(product.id).await.unwrap();
    assert!(store.find_product(&IdOrSlug::Id(product.id)).await.unwrap().is_none());
    let error = store.delete_product(product.id).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
}

/// Every committed catalog write moves both generations (the process's at once, the stored
/// one for the other instances); a failed write moves neither, and reads move nothing.
pub async fn catalog_writes_move_the_cache_generations(store: SharedStore) {
    use shop::cache::Family;
    let generations = store.generations();
    let mut local = generations.current(Family::Catalog);
    let mut stored = store.stored_generation(Family::Catalog).await.unwrap();
    let mut moved = async |what: &str| {
        let (now_local, now_stored) =
            (generations.current(Family::Catalog), store.stored_generation(Family::Catalog).await.unwrap());
        assert!(now_local > local, "{what}: the process's generation moved");
        assert_ne!(now_stored, stored, "{what}: the stored generation moved");
        (local, stored) = (now_local, now_stored);
    };
    let category = add_category(&store, "books", 0).await;
    moved("insert category").await;
    let product = store.insert_product(&new_product(category.id, "dune", 1_299, 7, 5)).await.unwrap();
    moved("insert product").await;
    let changes = ProductChanges { stock: Some(Stock::new(3).unwrap()), ..ProductChanges::default() };
    store.update_product(product.id, &changes, None, at(6)).await.unwrap();
    moved("update product").await;
    let renamed = CategoryChanges { name: Some(Text::name("Novels").unwrap()), ..CategoryChanges::default() };
    store.update_category(category.id, &renamed, at(7)).await.unwrap();
    moved("update category").await;
    store.delete_product(product.id).await.unwrap();
    moved("delete product").await;
    store.delete_category(category.id).await.unwrap();
    moved("delete category").await;

    store.list_products(&ProductQuery::default()).await.unwrap();
    assert!(store.delete_product(product.id).await.is_err());
    assert_eq!(generations.current(Family::Catalog), local, "reads and failed writes move nothing");
    assert_eq!(store.stored_generation(Family::Catalog).await.unwrap(), stored);
}
