//! Search over HTTP: `q` with the list's filters, highlights, corrections, facets, type-ahead,
//! the merchant's boost, and every parameter's errors and limits.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;
use shop_api::RateLimitScope;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, error_fields, problem, spawn_app_with};

both_backends!(
    q_searches_ranks_and_highlights,
    typos_are_corrected_and_reported,
    q_combines_with_filters_and_sort,
    facets_count_with_and_without_q,
    suggestions_complete_products_and_categories,
    search_boost_is_validated_and_ranks,
    search_parameters_are_validated,
);

async fn add(app: &TestApp, staff: &Client, category: &Value, name: &str, description: &str, price: &str, stock: i64) {
    let response = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({
            "name": name, "description": description, "price": price, "currency": "EUR", "stock": stock,
            "categoryId": category["id"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{name}");
}

async fn category(staff: &Client, app: &TestApp, name: &str) -> Value {
    let response = staff.post(app.url("/api/v1/categories")).json(&json!({ "name": name })).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// A small shop: laptops, bags and lamps.
async fn shop(app: &TestApp) -> (Client, Value, Value) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let laptops = category(&staff, app, "Laptops").await;
    let bags = category(&staff, app, "Bags").await;
    add(app, &staff, &laptops, "Gaming Laptop", "Fast <b>and</b> loud.", "1200.00", 3).await;
    add(app, &staff, &laptops, "Office Laptop", "Quiet.", "300", 0).await;
    add(app, &staff, &bags, "Laptop Sleeve", "Neoprene.", "25", 10).await;
    add(app, &staff, &bags, "Canvas Backpack", "Fits a 15-inch laptop & more.", "60", 2).await;
    add(app, &staff, &bags, "Desk Lamp", "Warm light.", "20", 5).await;
    (staff, laptops, bags)
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

fn names(body: &Value) -> Vec<&str> {
    body["data"].as_array().unwrap().iter().map(|item| item["name"].as_str().unwrap()).collect()
}

async fn q_searches_ranks_and_highlights(app: &TestApp) {
    shop(app).await;
    let body = get(app, "/api/v1/products?q=laptops").await;
    let found = names(&body);
    // Name matches first, then the category's name, then the description.
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(found.last(), Some(&"Canvas Backpack"), "{found:?}");
    assert_eq!(body["total"], 4);
    assert_eq!(body["search"]["query"], "laptops");
    assert_eq!(body["search"]["correctedQuery"], Value::Null);
    let backpack = &body["data"][3];
    assert_eq!(backpack["search"]["highlight"]["name"], "Canvas Backpack");
    assert_eq!(backpack["search"]["highlight"]["description"], "Fits a 15-inch <mark>laptop</mark> &amp; more.");
    assert_eq!(backpack["search"]["matchedWords"], 1);
    assert_eq!(backpack["search"]["typos"], 0);
    assert!(backpack["search"]["score"].is_number());
    let gaming = body["data"].as_array().unwrap().iter().find(|item| item["name"] == "Gaming Laptop").unwrap();
    assert_eq!(gaming["search"]["highlight"]["name"], "Gaming <mark>Laptop</mark>");
    assert_eq!(gaming["search"]["highlight"]["description"], "Fast &lt;b&gt;and&lt;/b&gt; loud.");
    // The plain list carries no search fields.
    let plain = get(app, "/api/v1/products").await;
    assert!(plain["search"].is_null() && plain["data"][0]["search"].is_null());
    // Nothing found is a 200 with an empty page.
    let none = get(app, "/api/v1/products?q=submarine").await;
    assert_eq!((none["total"].as_u64(), names(&none).len()), (Some(0), 0));
}

async fn typos_are_corrected_and_reported(app: &TestApp) {
    shop(app).await;
    let body = get(app, "/api/v1/products?q=labtop%20sleve").await;
    assert_eq!(names(&body)[0], "Laptop Sleeve");
    assert_eq!(body["search"]["correctedQuery"], "laptop sleeve");
    assert_eq!(body["search"]["typoTolerant"], true);
    assert_eq!(body["data"][0]["search"]["typos"], 2);
    // Swapped letters are one typo.
    let swapped = get(app, "/api/v1/products?q=lpatop").await;
    assert_eq!(swapped["total"], 4);
    // Short words must be exact.
    let short = get(app, "/api/v1/products?q=lamx").await;
    assert_eq!(short["total"], 0);
}

async fn q_combines_with_filters_and_sort(app: &TestApp) {
    let (staff, laptops, _) = shop(app).await;
    let body =
        get(app, &format!("/api/v1/products?q=laptop&category={}&inStock=true", laptops["slug"].as_str().unwrap()))
            .await;
    assert_eq!(names(&body), ["Gaming Laptop"]);
    let cheap = get(app, "/api/v1/products?q=laptop&maxPrice=100&sortBy=price&sortOrder=asc").await;
    assert_eq!(names(&cheap), ["Laptop Sleeve", "Canvas Backpack"]);
    let paged = get(app, "/api/v1/products?q=laptop&limit=1&page=2&sortBy=price&sortOrder=asc").await;
    assert_eq!(
        (names(&paged), paged["total"].as_u64(), paged["totalPages"].as_u64()),
        (vec!["Canvas Backpack"], Some(4), Some(4))
    );
    // Archived products leave the public results at once; staff can still search them.
    let office = get(app, "/api/v1/products?q=office").await;
    let id = office["data"][0]["id"].as_str().unwrap().to_owned();
    let archived = staff.post(app.url(&format!("/api/v1/products/{id}/archive"))).send().await.unwrap();
    assert_eq!(archived.status(), StatusCode::OK);
    assert_eq!(get(app, "/api/v1/products?q=office").await["total"], 0);
    let response = staff.get(app.url("/api/v1/products?q=office&status=archived")).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(names(&body), ["Office Laptop"]);
    let anonymous = app.http.get(app.url("/api/v1/products?q=office&status=all")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

async fn facets_count_with_and_without_q(app: &TestApp) {
    shop(app).await;
    let body = get(app, "/api/v1/products?q=laptop&facets=category,price,inStock").await;
    let categories: Vec<(&str, u64)> = body["facets"]["category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|facet| (facet["name"].as_str().unwrap(), facet["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(categories, [("Bags", 2), ("Laptops", 2)]);
    assert_eq!(body["facets"]["inStock"], json!({ "inStock": 3, "outOfStock": 1 }));
    let prices = body["facets"]["price"].as_array().unwrap();
    assert_eq!(prices[0], json!({ "from": "0.00", "to": "10.00", "count": 0 }));
    assert_eq!(prices.last().unwrap()["to"], Value::Null);
    assert_eq!(prices.iter().map(|bucket| bucket["count"].as_u64().unwrap()).sum::<u64>(), 4);
    // Each count is what the filter would list.
    let in_bags = get(app, "/api/v1/products?q=laptop&category=bags").await;
    assert_eq!(in_bags["total"], 2);
    // Only the facets asked for; and without q, over the filtered list.
    let stock_only = get(app, "/api/v1/products?facets=inStock&maxPrice=100").await;
    assert_eq!(stock_only["facets"], json!({ "inStock": { "inStock": 3, "outOfStock": 0 } }));
    assert_eq!(stock_only["total"], 3);
}

async fn suggestions_complete_products_and_categories(app: &TestApp) {
    shop(app).await;
    let body = get(app, "/api/v1/products/suggestions?q=lap&limit=8").await;
    let products: Vec<&str> =
        body["products"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    // Three names hold "laptop"; the backpack's description does, so it comes last.
    assert_eq!(products.len(), 4, "{products:?}");
    assert_eq!(products[3], "Canvas Backpack", "{products:?}");
    assert_eq!(body["categories"][0]["name"], "Laptops");
    assert!(body["products"][0]["highlight"].as_str().unwrap().contains("<mark>Laptop</mark>"));
    assert!(body["products"][0]["price"].is_string());
    let two = get(app, "/api/v1/products/suggestions?q=gamign%20la&limit=1").await;
    assert_eq!(two["products"].as_array().unwrap().len(), 1);
    assert_eq!(two["products"][0]["name"], "Gaming Laptop");
    let response = app.http.get(app.url("/api/v1/products/suggestions?q=lap")).send().await.unwrap();
    assert!(response.headers().contains_key("etag"), "suggestions are cacheable");
    for bad in ["", "?q=", "?q=%20%20", "?q=lap&limit=0", "?q=lap&limit=21", "?q=lap&limit=x", "?q=***"] {
        let response = app.http.get(app.url(&format!("/api/v1/products/suggestions{bad}"))).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert!(!error_fields(&body).is_empty(), "{bad}");
    }
    let unknown = app.http.get(app.url("/api/v1/products/suggestions?q=lap&sort=x")).send().await.unwrap();
    problem(unknown, StatusCode::BAD_REQUEST).await;
}

async fn search_boost_is_validated_and_ranks(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let mugs = category(&staff, app, "Mugs").await;
    add(app, &staff, &mugs, "Red Mug", "", "5", 5).await;
    add(app, &staff, &mugs, "Blue Mug", "", "5", 5).await;
    let response = staff
        .post(app.url("/api/v1/products"))
        .json(&json!({ "name": "Green Mug", "price": "5", "currency": "EUR", "stock": 1, "categoryId": mugs["id"],
                       "searchBoost": 1001 }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_fields(&problem(response, StatusCode::BAD_REQUEST).await), ["searchBoost"]);
    let blue = get(app, "/api/v1/products?q=blue").await;
    let id = blue["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(blue["data"][0]["searchBoost"], 0);
    let patched = staff
        .patch(app.url(&format!("/api/v1/products/{id}")))
        .json(&json!({ "searchBoost": 50 }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(patched.json::<Value>().await.unwrap()["searchBoost"], 50);
    let bad = staff
        .patch(app.url(&format!("/api/v1/products/{id}")))
        .json(&json!({ "searchBoost": -1001 }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_fields(&problem(bad, StatusCode::BAD_REQUEST).await), ["searchBoost"]);
    assert_eq!(names(&get(app, "/api/v1/products?q=mug").await), ["Blue Mug", "Red Mug"]);
}

async fn search_parameters_are_validated(app: &TestApp) {
    let long = "a".repeat(201);
    let cases: [(&str, &str); 6] = [
        ("q=", "q"),
        ("q=%20%20%20", "q"),
        (&format!("q={long}"), "q"),
        ("q=%22*%22%20-", "q"),
        ("q=laptop&facets=colour", "facets"),
        ("q=laptop&facets=", "facets"),
    ];
    for (query, field) in cases {
        let response = app.http.get(app.url(&format!("/api/v1/products?{query}"))).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&body), [field], "{query}");
    }
    let response = app.http.get(app.url("/api/v1/products?q=&sortBy=nope")).send().await.unwrap();
    assert_eq!(error_fields(&problem(response, StatusCode::BAD_REQUEST).await), ["q", "sortBy"]);
    // 200 characters is fine, and operator characters are text.
    let edge = "b".repeat(200);
    get(app, &format!("/api/v1/products?q={edge}")).await;
    for query in ["%22laptop", "laptop*", "NEAR(a%20b)", "a:b", "a%26b%7Cc!", "(x", "drop%27);--"] {
        get(app, &format!("/api/v1/products?q={query}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_have_their_own_rate_limit() {
    let quota = resilience::Quota::new(3, Duration::from_secs(60));
    let app =
        spawn_app_with(Backend::Sqlite, |config| config.rate_limits.quotas[RateLimitScope::SearchPerIp] = quota).await;
    let mut statuses = Vec::new();
    for path in [
        "/api/v1/products?q=a",
        "/api/v1/products/suggestions?q=a",
        "/api/v1/products?facets=inStock",
        "/api/v1/products?q=b",
    ] {
        statuses.push(app.http.get(app.url(path)).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The plain list is not a search: still served.
    let plain = app.http.get(app.url("/api/v1/products")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    // Metrics count searches and zero-result searches.
    let metrics = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("search_requests_total{kind=\"search\",outcome=\"zero_results\"}"), "{metrics}");
    assert!(metrics.contains("search_zero_results_total"), "{metrics}");
    assert!(metrics.contains("search_duration_seconds"), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_refuses_an_index_analysed_another_way_when_it_does_not_migrate() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let mut config = app.config.clone();
    config.database.migrate_on_start = Some(false);
    config.search.language = "german".into();
    let refused = shopkeep::app::Application::build(config).await.err().expect("the start is refused");
    let message = format!("{refused:#}");
    assert!(message.contains("search.language") && message.contains("shopkeep migrate up"), "{message}");
    app.stop().await;
}
