//! Catalog: categories and products, listing, caching and conditional updates.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{TestApp, error_fields, problem};

both_backends!(
    staff_create_and_anyone_reads,
    catalog_writes_need_staff,
    product_creation_reports_every_invalid_field,
    duplicate_slugs_conflict,
    product_lists_page_sort_and_filter,
    product_list_parameters_are_validated,
    archived_products_leave_the_storefront,
    public_reads_are_cacheable_with_etags,
    if_match_guards_product_updates,
    product_patch_validates_and_keeps_currency,
    deletes_and_their_conflicts,
    categories_list_and_update,
);

async fn staff_with_category(app: &TestApp) -> (Client, String) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "books").await;
    (staff, category["id"].as_str().unwrap().to_owned())
}

async fn staff_create_and_anyone_reads(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let created = staff
        .post(app.url("/api/v1/categories"))
        .json(&json!({ "name": "Science Fiction & Fantasy", "description": "Far away." }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let category: Value = created.json().await.unwrap();
    assert_eq!(category["slug"], "science-fiction-fantasy", "derived from the name");
    assert_eq!(location, format!("/api/v1/categories/{}", category["id"].as_str().unwrap()));

    let product = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({
            "name": "Dune", "description": "Spice.", "price": "12.9", "currency": "eur", "stock": 3,
            "categoryId": category["id"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), StatusCode::CREATED);
    let location = product.headers()["location"].to_str().unwrap().to_owned();
    let product: Value = product.json().await.unwrap();
    assert_eq!(product["price"], "12.90");
    assert_eq!(product["currency"], "EUR");
    assert_eq!(product["slug"], "dune");
    assert_eq!(product["status"], "active");
    assert_eq!(product["version"], 1);

    for path in [location.clone(), "/api/v1/products/dune".to_owned()] {
        let fetched = app.http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(fetched.status(), StatusCode::OK);
        let fetched: Value = fetched.json().await.unwrap();
        assert_eq!(fetched["id"], product["id"]);
    }
    let by_slug = app.api(Method::GET, "/categories/science-fiction-fantasy").send().await.unwrap();
    assert_eq!(by_slug.json::<Value>().await.unwrap()["id"], category["id"]);
    problem(app.api(Method::GET, "/products/no-such-thing").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let random_id = format!("/products/{}", uuid::Uuid::now_v7());
    problem(app.api(Method::GET, &random_id).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(app.api(Method::GET, "/products/Not%20A%20Slug").send().await.unwrap(), StatusCode::NOT_FOUND).await;
}

async fn catalog_writes_need_staff(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    let product = app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    let product_path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let customer = app.signed_in("ada@example.com", Role::Customer).await;
    let writes: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/api/v1/categories".into(), json!({ "name": "Games" })),
        (Method::PATCH, "/api/v1/categories/books".into(), json!({ "name": "Books!" })),
        (Method::DELETE, "/api/v1/categories/books".into(), json!({})),
        (Method::POST, "/api/v1/products".into(), json!({ "name": "x" })),
        (Method::PATCH, product_path.clone(), json!({ "stock": 0 })),
        (Method::POST, format!("{product_path}/archive"), json!({})),
        (Method::DELETE, product_path.clone(), json!({})),
    ];
    for (method, path, body) in writes {
        let anonymous = app.http.request(method.clone(), app.url(&path)).json(&body).send().await.unwrap();
        problem(anonymous, StatusCode::UNAUTHORIZED).await;
        let forbidden = customer.request(method.clone(), app.url(&path)).json(&body).send().await.unwrap();
        problem(forbidden, StatusCode::FORBIDDEN).await;
    }
    let still_there: Value = app.http.get(app.url(&product_path)).send().await.unwrap().json().await.unwrap();
    assert_eq!(still_there["stock"], 1);
}

async fn product_creation_reports_every_invalid_field(app: &TestApp) {
    let (staff, _) = staff_with_category(app).await;
    let response = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({
            "name": "", "slug": "Bad Slug", "price": "12.999", "currency": "XYZ", "stock": -1,
            "categoryId": "not-an-id", "status": "archived"
        }))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["name", "slug", "price", "currency", "stock", "categoryId", "status"]);

    let missing = staff.post(app.url("/api/v1/products")).json(&json!({})).send().await.unwrap();
    let body = problem(missing, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["name", "price", "currency", "stock", "categoryId"]);

    let float_price = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({ "name": "Dune", "price": 12.99, "currency": "EUR", "stock": 1 }))
        .send()
        .await
        .unwrap();
    let body = problem(float_price, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["price"], "money is never a JSON float");

    let unknown_category = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({
            "name": "Dune", "price": "1.00", "currency": "EUR", "stock": 1, "categoryId": uuid::Uuid::now_v7()
        }))
        .send()
        .await
        .unwrap();
    let body = problem(unknown_category, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["categoryId"]);
}

async fn duplicate_slugs_conflict(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    let again = staff.post(app.url("/api/v1/categories")).json(&json!({ "name": "Books" })).send().await.unwrap();
    problem(again, StatusCode::CONFLICT).await;
    app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    let duplicate = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({ "name": "Dune", "price": "1.00", "currency": "EUR", "stock": 1, "categoryId": category_id }))
        .send()
        .await
        .unwrap();
    problem(duplicate, StatusCode::CONFLICT).await;
    let other = app.add_product(&staff, &category_id, "emma", "9.99", 1).await;
    let rename = staff
        .patch(app.url(&format!("/api/v1/products/{}", other["id"].as_str().unwrap())))
        .json(&json!({ "slug": "dune" }))
        .send()
        .await
        .unwrap();
    problem(rename, StatusCode::CONFLICT).await;
}

async fn seed(app: &TestApp) -> (Client, String, String) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let books = app.add_category(&staff, "books").await["id"].as_str().unwrap().to_owned();
    let games = app.add_category(&staff, "games").await["id"].as_str().unwrap().to_owned();
    for (category, slug, price, stock) in [
        (&books, "dune", "12.99", 5),
        (&books, "emma", "4.99", 0),
        (&games, "chess", "25.00", 2),
        (&games, "go", "40.00", 1),
        (&books, "ulysses", "15.00", 9),
    ] {
        app.add_product(&staff, category, slug, price, stock).await;
    }
    (staff, books, games)
}

fn slugs(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap().to_owned()).collect()
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app.http.get(app.url(&format!("/api/v1/products{query}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

async fn product_lists_page_sort_and_filter(app: &TestApp) {
    let (_, books, _) = seed(app).await;
    let all = list(app, "").await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["page"], 1);
    assert_eq!(all["limit"], 20);
    assert_eq!(all["totalPages"], 1);
    assert_eq!(slugs(&all), ["ulysses", "go", "chess", "emma", "dune"], "newest first by default");

    let page = list(app, "?sortBy=price&sortOrder=asc&limit=2&page=2").await;
    assert_eq!(slugs(&page), ["ulysses", "chess"]);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(slugs(&list(app, "?sortBy=name&sortOrder=asc").await), ["chess", "dune", "emma", "go", "ulysses"]);
    assert_eq!(slugs(&list(app, "?category=games&sortBy=price&sortOrder=asc").await), ["chess", "go"]);
    assert_eq!(list(app, &format!("?category={books}")).await["total"], 3);
    assert_eq!(
        slugs(&list(app, "?minPrice=12.99&maxPrice=25&sortBy=price&sortOrder=asc").await),
        ["dune", "ulysses", "chess"]
    );
    assert_eq!(list(app, "?inStock=true").await["total"], 4);
    assert_eq!(slugs(&list(app, "?inStock=false").await), ["emma"]);
    let nothing = list(app, "?category=toys").await;
    assert_eq!(nothing["data"], json!([]));
    assert_eq!(nothing["total"], 0);
    let beyond = list(app, "?page=50").await;
    assert_eq!(beyond["data"], json!([]));
}

async fn product_list_parameters_are_validated(app: &TestApp) {
    let response =
        app.http
            .get(app.url(
                "/api/v1/products?page=0&limit=101&sortBy=password&sortOrder=sideways&minPrice=cheap&inStock=maybe",
            ))
            .send()
            .await
            .unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["page", "limit", "sortBy", "sortOrder", "minPrice", "inStock"]);
    let inverted = app.http.get(app.url("/api/v1/products?minPrice=10&maxPrice=5")).send().await.unwrap();
    assert_eq!(error_fields(&problem(inverted, StatusCode::BAD_REQUEST).await), ["maxPrice"]);
    let unknown = app.http.get(app.url("/api/v1/products?color=red")).send().await.unwrap();
    problem(unknown, StatusCode::BAD_REQUEST).await;
}

async fn archived_products_leave_the_storefront(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    let product = app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    app.add_product(&staff, &category_id, "emma", "9.99", 1).await;
    let archive_url = app.url(&format!("/api/v1/products/{}/archive", product["id"].as_str().unwrap()));
    let archived = staff.post(&archive_url).send().await.unwrap();
    assert_eq!(archived.status(), StatusCode::OK);
    assert_eq!(archived.json::<Value>().await.unwrap()["status"], "archived");
    assert_eq!(staff.post(&archive_url).send().await.unwrap().status(), StatusCode::OK, "archiving twice is fine");

    assert_eq!(slugs(&list(app, "").await), ["emma"]);
    problem(app.http.get(app.url("/api/v1/products/dune")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let staff_view = staff.get(app.url("/api/v1/products/dune")).send().await.unwrap();
    assert_eq!(staff_view.status(), StatusCode::OK);
    assert_eq!(staff_view.headers()["cache-control"], "private, no-cache");
    let archived_list: Value =
        staff.get(app.url("/api/v1/products?status=archived")).send().await.unwrap().json().await.unwrap();
    assert_eq!(slugs(&archived_list), ["dune"]);
    let all: Value = staff.get(app.url("/api/v1/products?status=all")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["total"], 2);
    let peek = app.http.get(app.url("/api/v1/products?status=archived")).send().await.unwrap();
    problem(peek, StatusCode::UNAUTHORIZED).await;
    let customer = app.signed_in("ada@example.com", Role::Customer).await;
    let peek = customer.get(app.url("/api/v1/products?status=all")).send().await.unwrap();
    problem(peek, StatusCode::FORBIDDEN).await;

    let restored =
        staff.patch(app.url("/api/v1/products/dune")).json(&json!({ "status": "active" })).send().await.unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    assert_eq!(list(app, "").await["total"], 2);
}

async fn public_reads_are_cacheable_with_etags(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    for path in ["/api/v1/products/dune", "/api/v1/products", "/api/v1/categories", "/api/v1/categories/books"] {
        let first = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["cache-control"], "public, max-age=60", "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        let again = app.http.get(app.url(path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = app.http.get(app.url(path)).header("if-none-match", "\"stale\"").send().await.unwrap();
        assert_eq!(stale.status(), StatusCode::OK);
    }
    let before = app.http.get(app.url("/api/v1/products/dune")).send().await.unwrap();
    let etag = before.headers()["etag"].to_str().unwrap().to_owned();
    let changed = staff.patch(app.url("/api/v1/products/dune")).json(&json!({ "stock": 7 })).send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let after = app.http.get(app.url("/api/v1/products/dune")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::OK, "a change makes the old ETag stale");
}

async fn if_match_guards_product_updates(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    let read = staff.get(app.url("/api/v1/products/dune")).send().await.unwrap();
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();

    let first = staff
        .patch(app.url("/api/v1/products/dune"))
        .header("if-match", &etag)
        .json(&json!({ "stock": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let new_etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert_eq!(first.json::<Value>().await.unwrap()["version"], 2);

    let lost_update = staff
        .patch(app.url("/api/v1/products/dune"))
        .header("if-match", &etag)
        .json(&json!({ "stock": 99 }))
        .send()
        .await
        .unwrap();
    problem(lost_update, StatusCode::PRECONDITION_FAILED).await;
    let current: Value = app.http.get(app.url("/api/v1/products/dune")).send().await.unwrap().json().await.unwrap();
    assert_eq!(current["stock"], 4);
    let weak = staff
        .patch(app.url("/api/v1/products/dune"))
        .header("if-match", format!("W/{new_etag}"))
        .json(&json!({ "stock": 6 }))
        .send()
        .await
        .unwrap();
    problem(weak, StatusCode::PRECONDITION_FAILED).await;
    let with_new = staff
        .patch(app.url("/api/v1/products/dune"))
        .header("if-match", &new_etag)
        .json(&json!({ "stock": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(with_new.status(), StatusCode::OK);
    let unknown = staff
        .patch(app.url(&format!("/api/v1/products/{}", uuid::Uuid::now_v7())))
        .json(&json!({ "stock": 5 }))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
}

async fn product_patch_validates_and_keeps_currency(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    let product = app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    let url = app.url(&format!("/api/v1/products/{}", product["id"].as_str().unwrap()));
    let invalid = staff
        .patch(&url)
        .json(&json!({ "name": "", "price": "-1", "stock": -5, "status": "gone", "categoryId": "x" }))
        .send()
        .await
        .unwrap();
    let body = problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["price", "name", "stock", "categoryId", "status"]);
    let server_managed = staff.patch(&url).json(&json!({ "version": 10 })).send().await.unwrap();
    problem(server_managed, StatusCode::BAD_REQUEST).await;
    let repriced: Value = staff.patch(&url).json(&json!({ "price": "11" })).send().await.unwrap().json().await.unwrap();
    assert_eq!(repriced["price"], "11.00");
    assert_eq!(repriced["currency"], "EUR");
    let moved = staff.patch(&url).json(&json!({ "categoryId": uuid::Uuid::now_v7() })).send().await.unwrap();
    assert_eq!(error_fields(&problem(moved, StatusCode::BAD_REQUEST).await), ["categoryId"]);
}

async fn deletes_and_their_conflicts(app: &TestApp) {
    let (staff, category_id) = staff_with_category(app).await;
    let product = app.add_product(&staff, &category_id, "dune", "9.99", 1).await;
    let in_use = staff.delete(app.url("/api/v1/categories/books")).send().await.unwrap();
    problem(in_use, StatusCode::CONFLICT).await;
    let product_url = app.url(&format!("/api/v1/products/{}", product["id"].as_str().unwrap()));
    assert_eq!(staff.delete(&product_url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    problem(staff.delete(&product_url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(app.http.get(&product_url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(
        staff.delete(app.url("/api/v1/categories/books")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    problem(staff.delete(app.url("/api/v1/categories/books")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
}

async fn categories_list_and_update(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    for slug in ["cameras", "apples", "books"] {
        app.add_category(&staff, slug).await;
    }
    let by_name: Value = app
        .http
        .get(app.url("/api/v1/categories?sortBy=name&sortOrder=asc&limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(slugs(&by_name), ["apples", "books"]);
    assert_eq!(by_name["total"], 3);
    let invalid = app.http.get(app.url("/api/v1/categories?sortBy=price")).send().await.unwrap();
    assert_eq!(error_fields(&problem(invalid, StatusCode::BAD_REQUEST).await), ["sortBy"]);

    let updated = staff
        .patch(app.url("/api/v1/categories/apples"))
        .json(&json!({ "name": "Fruit", "slug": "fruit" }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(app.http.get(app.url("/api/v1/categories/fruit")).send().await.unwrap().status(), StatusCode::OK);
    let taken =
        staff.patch(app.url("/api/v1/categories/fruit")).json(&json!({ "slug": "books" })).send().await.unwrap();
    problem(taken, StatusCode::CONFLICT).await;
    let invalid = staff.patch(app.url("/api/v1/categories/fruit")).json(&json!({ "name": "", "slug": "A B" })).send();
    assert_eq!(error_fields(&problem(invalid.await.unwrap(), StatusCode::BAD_REQUEST).await), ["name", "slug"]);
    let missing = staff.patch(app.url("/api/v1/categories/nope")).json(&json!({ "name": "x" })).send().await.unwrap();
    problem(missing, StatusCode::NOT_FOUND).await;
}
