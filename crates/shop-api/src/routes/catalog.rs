//! Catalog routes: categories and products. Reads are public and cacheable; writes are staff's.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shop::ValidationErrors;
use shop::accounts::Role;
use shop::catalog::{
    CategoryChanges, CategorySort, Currency, IdOrSlug, Money, NewProductInput, Product, ProductChanges, ProductQuery,
    ProductSort, ProductStatus, SearchBoost, Slug, Stock, Text, parse_amount,
};
use shop::search::{FacetRequest, SearchText};
use shop::{SortOrder, StoreError};
use utoipa::IntoParams;
use uuid::Uuid;

use super::accounts::{client_ip, parse_bool, parse_page};
use super::caching::{Rendered, cache_control_public, if_match, public_json, rendered_response, representation};
use super::search::{self, list_body};
use super::with_location;
use crate::auth::MaybeAuthenticated;
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::{Json, Query};
use crate::rate_limits::ClientIp;
use crate::state::AppState;
use crate::wire::{
    CategoryBody, CategoryRequest, Paged, ProductBody, ProductListBody, ProductListItem, ProductRequest,
};

/// Query of the category list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CategoryListQuery {
    /// 1-based page number (default 1).
    page: Option<String>,
    /// Page size, 1–100 (default 20).
    limit: Option<String>,
    /// `createdAt` (default) or `name`.
    sort_by: Option<String>,
    /// `asc` or `desc` (default `desc`).
    sort_order: Option<String>,
}

/// Lists categories.
#[utoipa::path(get, path = "/categories", tag = "catalog", params(CategoryListQuery), security(()),
    responses(
        (status = 200, description = "One page of categories (ETag, cacheable)", body = Paged<CategoryBody>),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        CommonErrors
    ))]
pub async fn list_categories(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CategoryListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let page = parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let sort_by = query.sort_by.as_deref().and_then(|raw| errors.check("sortBy", CategorySort::parse(raw)));
    let sort_order = query.sort_order.as_deref().and_then(|raw| errors.check("sortOrder", SortOrder::parse(raw)));
    errors.into_result()?;
    let page =
        state.catalog().list_categories(page, sort_by.unwrap_or_default(), sort_order.unwrap_or_default()).await?;
    Ok(public_json(&headers, &Paged::from_page(page, CategoryBody::from), max_age(&state)))
}

/// Creates a category (staff).
#[utoipa::path(post, path = "/categories", tag = "catalog", request_body = CategoryRequest,
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 201, description = "Created", body = CategoryBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn create_category(
    State(state): State<AppState>,
    Json(body): Json<CategoryRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let name = errors.check("name", Text::name(body.name.as_deref().unwrap_or_default()));
    let slug = slug_or_derived(&mut errors, body.slug.as_deref(), body.name.as_deref());
    let description = errors.check("description", Text::description(body.description.as_deref().unwrap_or_default()));
    let (Some(name), Some(slug), Some(description)) = (name, slug, description) else {
        return Err(ApiError::Invalid(errors));
    };
    let category = state.catalog().create_category(name, slug, description).await?;
    Ok(created(&format!("/api/v1/categories/{}", category.id), &CategoryBody::from(category)))
}

/// One category by id or slug.
#[utoipa::path(get, path = "/categories/{idOrSlug}", tag = "catalog", security(()),
    params(("idOrSlug" = String, Path, description = "Category id or slug")),
    responses(
        (status = 200, description = "The category (ETag, cacheable)", body = CategoryBody),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn get_category(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id_or_slug): Path<String>,
) -> Result<Response, ApiError> {
    let key = IdOrSlug::parse(&id_or_slug).ok_or(ApiError::NotFound)?;
    let category = state.catalog().get_category(&key).await?;
    Ok(public_json(&headers, &CategoryBody::from(category), max_age(&state)))
}

/// Changes a category (staff).
#[utoipa::path(patch, path = "/categories/{idOrSlug}", tag = "catalog", request_body = CategoryRequest,
    params(("idOrSlug" = String, Path, description = "Category id or slug")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 200, description = "The updated category", body = CategoryBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn update_category(
    State(state): State<AppState>,
    Path(id_or_slug): Path<String>,
    Json(body): Json<CategoryRequest>,
) -> Result<Response, ApiError> {
    let key = IdOrSlug::parse(&id_or_slug).ok_or(ApiError::NotFound)?;
    let mut errors = ValidationErrors::new();
    let changes = CategoryChanges {
        name: body.name.as_deref().and_then(|raw| errors.check("name", Text::name(raw))),
        slug: body.slug.as_deref().and_then(|raw| errors.check("slug", Slug::parse(raw))),
        description: body.description.as_deref().and_then(|raw| errors.check("description", Text::description(raw))),
    };
    errors.into_result()?;
    let category = state.catalog().update_category(&key, &changes).await?;
    Ok((StatusCode::OK, axum::Json(CategoryBody::from(category))).into_response())
}

/// Deletes a category that no product uses (staff).
#[utoipa::path(delete, path = "/categories/{idOrSlug}", tag = "catalog",
    params(("idOrSlug" = String, Path, description = "Category id or slug")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Products still use the category", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn delete_category(
    State(state): State<AppState>,
    Path(id_or_slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = IdOrSlug::parse(&id_or_slug).ok_or(ApiError::NotFound)?;
    state.catalog().delete_category(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the product list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductListQuery {
    /// 1-based page number (default 1).
    page: Option<String>,
    /// Page size, 1–100 (default 20).
    limit: Option<String>,
    /// `createdAt` (default), `updatedAt`, `name`, `price` or `stock`.
    sort_by: Option<String>,
    /// `asc` or `desc` (default `desc`).
    sort_order: Option<String>,
    /// Category id or slug.
    category: Option<String>,
    /// Lowest price, inclusive (decimal string).
    min_price: Option<String>,
    /// Highest price, inclusive (decimal string).
    max_price: Option<String>,
    /// `true`: only products in stock; `false`: only sold-out ones.
    in_stock: Option<String>,
    /// Staff only: `active` (default), `archived` or `all`.
    status: Option<String>,
    /// Full-text search, 1–200 characters with at least one letter or digit: ranked by
    /// relevance unless `sortBy` is given, typo-tolerant, every filter still applies.
    q: Option<String>,
    /// Facet counts over every match: a comma-separated list of `category`, `price`, `inStock`.
    facets: Option<String>,
}

/// Lists products; archived ones only for staff who ask. With `q`, searches them.
#[utoipa::path(get, path = "/products", tag = "catalog", params(ProductListQuery), security(()),
    responses(
        (status = 200, description = "One page of products (ETag, cacheable)", body = ProductListBody),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 401, description = "`status` other than active asked for anonymously", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`status` other than active asked for by someone not staff", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many searches from this address (`q` or `facets` given)", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_products(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Query(query): Query<ProductListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let text = query.q.as_deref().and_then(|raw| errors.check("q", SearchText::parse(raw)));
    let facets = query.facets.as_deref().and_then(|raw| errors.check("facets", FacetRequest::parse(raw)));
    let page = parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let sort_by = query.sort_by.as_deref().and_then(|raw| errors.check("sortBy", ProductSort::parse(raw)));
    let sort_order = query.sort_order.as_deref().and_then(|raw| errors.check("sortOrder", SortOrder::parse(raw)));
    let category = query
        .category
        .as_deref()
        .and_then(|raw| errors.check("category", IdOrSlug::parse(raw).ok_or("must be a category id or slug")));
    let min_price = query.min_price.as_deref().and_then(|raw| errors.check("minPrice", parse_amount(raw)));
    let max_price = query.max_price.as_deref().and_then(|raw| errors.check("maxPrice", parse_amount(raw)));
    if let (Some(min), Some(max)) = (min_price, max_price)
        && min > max
    {
        errors.add("maxPrice", "must not be below minPrice");
    }
    let in_stock = query.in_stock.as_deref().and_then(|raw| errors.check("inStock", parse_bool(raw)));
    let status = match query.status.as_deref() {
        None | Some("active") => Some(Some(ProductStatus::Active)),
        Some("archived") => Some(Some(ProductStatus::Archived)),
        Some("all") => Some(None),
        Some(_) => {
            errors.add("status", "must be active, archived or all");
            None
        }
    };
    errors.into_result()?;
    let status = status.flatten();
    let is_staff = caller.as_ref().is_some_and(|caller| caller.has_role(Role::Staff));
    if status != Some(ProductStatus::Active) && !is_staff {
        return Err(match caller {
            None => ApiError::Unauthenticated("sign in as staff to list archived products"),
            Some(_) => ApiError::Forbidden("only staff may list archived products"),
        });
    }
    let filters = ProductQuery {
        page,
        sort_by: sort_by.unwrap_or_default(),
        sort_order: sort_order.unwrap_or_default(),
        category,
        min_price_minor: min_price,
        max_price_minor: max_price,
        in_stock,
        status,
    };
    // Staff views may include archived products: never shared through public caches.
    // A search shaped per caller (the `fuzzy_search` flag has rules) is not for shared caches.
    let per_caller = text.is_some() && state.flags().varies_by_caller(shop::flags::known::FUZZY_SEARCH);
    let cache_control = if is_staff || per_caller {
        HeaderValue::from_static("private, no-cache")
    } else {
        cache_control_public(max_age(&state))
    };
    let body = match (text, facets) {
        (None, None) => {
            // The plain list is the hottest read: its rendered body is cached under the same
            // generation as the page it renders, so it is never older than the page.
            let load = || async {
                let page = state.catalog().list_products(&filters).await.map_err(into_store_error)?;
                Rendered::of(&list_body(page.map(ProductListItem::from))).map_err(StoreError::other)
            };
            let rendered = state
                .inner
                .list_bodies
                .get_or_load(format!("{filters:?}"), |_| false, load)
                .await
                .map_err(shop::Error::from)?;
            return Ok(rendered_response(&headers, rendered, cache_control));
        }
        (None, Some(wanted)) => search::facet_list(&state, client_ip(client), &filters, wanted).await?,
        (Some(text), wanted) => {
            let facets = wanted.unwrap_or_default();
            search::search_list(&state, caller.as_ref(), &headers, client_ip(client), &text, &filters, sort_by, facets)
                .await?
        }
    };
    Ok(match Rendered::of(&body) {
        Ok(rendered) => rendered_response(&headers, rendered, cache_control),
        Err(error) => error.into_response(),
    })
}

/// A catalog read's error as the cache carries it (the inverse of `From<StoreError>`: a read
/// only fails in storage).
fn into_store_error(error: shop::Error) -> StoreError {
    match error {
        shop::Error::NotFound => StoreError::NotFound,
        shop::Error::Internal(source) => StoreError::Other(source),
        other => StoreError::other(other),
    }
}

/// Creates a product (staff).
#[utoipa::path(post, path = "/products", tag = "catalog", request_body = ProductRequest,
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    Json(body): Json<ProductRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let name = errors.check("name", Text::name(body.name.as_deref().unwrap_or_default()));
    let slug = slug_or_derived(&mut errors, body.slug.as_deref(), body.name.as_deref());
    let description = errors.check("description", Text::description(body.description.as_deref().unwrap_or_default()));
    let amount =
        errors.check("price", body.price.as_deref().ok_or_else(|| "is required".to_owned()).and_then(parse_amount));
    let currency = errors
        .check("currency", body.currency.as_deref().ok_or_else(|| "is required".to_owned()).and_then(Currency::parse));
    let stock = errors.check("stock", body.stock.ok_or_else(|| "is required".to_owned()).and_then(Stock::new));
    let category_id = errors.check(
        "categoryId",
        body.category_id
            .as_deref()
            .ok_or("is required")
            .and_then(|raw| Uuid::parse_str(raw).map_err(|_| "must be a category id")),
    );
    if body.status.is_some() {
        errors.add("status", "new products are active; archive them with POST /products/{id}/archive");
    }
    let search_boost = body
        .search_boost
        .map_or(Some(SearchBoost::default()), |raw| errors.check("searchBoost", SearchBoost::new(raw)));
    let price =
        amount.zip(currency).and_then(|(amount, currency)| errors.check("price", Money::from_minor(amount, currency)));
    let (Some(name), Some(slug), Some(description), Some(price), Some(stock), Some(category_id), Some(search_boost)) =
        (name, slug, description, price, stock, category_id, search_boost)
    else {
        return Err(ApiError::Invalid(errors));
    };
    errors.into_result()?;
    let input = NewProductInput { name, slug, description, price, stock, category_id, search_boost };
    let product = state.catalog().create_product(input).await?;
    Ok(created(&format!("/api/v1/products/{}", product.id), &ProductBody::from(product)))
}

/// One product by id or slug (ETag). Archived products are visible to staff only.
#[utoipa::path(get, path = "/products/{idOrSlug}", tag = "catalog", security(()),
    params(("idOrSlug" = String, Path, description = "Product id or slug")),
    responses(
        (status = 200, description = "The product (ETag, cacheable)", body = ProductBody),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn get_product(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path(id_or_slug): Path<String>,
) -> Result<Response, ApiError> {
    let key = IdOrSlug::parse(&id_or_slug).ok_or(ApiError::NotFound)?;
    let is_staff = caller.as_ref().is_some_and(|caller| caller.has_role(Role::Staff));
    let product = state.catalog().get_product(&key, is_staff).await?;
    let archived = product.status == ProductStatus::Archived;
    let mut response = public_json(&headers, &ProductBody::from(product), max_age(&state));
    if archived {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    }
    Ok(response)
}

/// Changes a product (staff). With `If-Match`, only if the product is unchanged since that ETag.
#[utoipa::path(patch, path = "/products/{idOrSlug}", tag = "catalog", request_body = ProductRequest,
    params(
        ("idOrSlug" = String, Path, description = "Product id or slug"),
        ("If-Match" = Option<String>, Header, description = "ETag from a previous read; 412 if the product changed since")
    ),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 200, description = "The updated product, with its new ETag", body = ProductBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match the current ETag", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id_or_slug): Path<String>,
    Json(body): Json<ProductRequest>,
) -> Result<Response, ApiError> {
    let key = IdOrSlug::parse(&id_or_slug).ok_or(ApiError::NotFound)?;
    let current = state.catalog().get_product(&key, true).await?;
    let id = current.id;
    let conditional = match headers.get(header::IF_MATCH) {
        Some(header_value) => {
            let (_, etag) = representation(&ProductBody::from(current.clone()))?;
            if !if_match(Some(header_value), &etag) {
                return Err(ApiError::PreconditionFailed);
            }
            true
        }
        None => false,
    };
    let changes = product_changes(&body, &current)?;
    // A price given without its currency (or the reverse) is completed from the product as read:
    // the update then only applies to that version, so a concurrent change is never half-overwritten.
    let merged = body.price.is_some() != body.currency.is_some();
    let expected_version = (conditional || merged).then_some(current.version);
    let product = match state.catalog().update_product(id, &changes, expected_version).await {
        Err(shop::Error::PreconditionFailed) if !conditional => {
            return Err(ApiError::Conflict("the product changed while it was being updated; try again".into()));
        }
        result => result?,
    };
    let (bytes, etag) = representation(&ProductBody::from(product))?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ETAG, etag)
        .body(axum::body::Body::from(bytes))
        .map_err(|error| ApiError::Internal(Box::new(error)))
}

/// Validates a PATCH body against the current product (a new price keeps the current currency
/// unless one is given).
fn product_changes(body: &ProductRequest, current: &Product) -> Result<ProductChanges, ApiError> {
    let mut errors = ValidationErrors::new();
    let amount = body.price.as_deref().and_then(|raw| errors.check("price", parse_amount(raw)));
    let currency = body.currency.as_deref().and_then(|raw| errors.check("currency", Currency::parse(raw)));
    let price = match (amount, currency) {
        (None, None) => None,
        (amount, currency) => {
            let amount = amount.unwrap_or(current.price.minor());
            let currency = currency.unwrap_or(current.price.currency());
            errors.check("price", Money::from_minor(amount, currency))
        }
    };
    let changes = ProductChanges {
        name: body.name.as_deref().and_then(|raw| errors.check("name", Text::name(raw))),
        slug: body.slug.as_deref().and_then(|raw| errors.check("slug", Slug::parse(raw))),
        description: body.description.as_deref().and_then(|raw| errors.check("description", Text::description(raw))),
        price,
        stock: body.stock.and_then(|units| errors.check("stock", Stock::new(units))),
        category_id: body
            .category_id
            .as_deref()
            .and_then(|raw| errors.check("categoryId", Uuid::parse_str(raw).map_err(|_| "must be a category id"))),
        status: body.status.as_deref().and_then(|raw| errors.check("status", ProductStatus::parse(raw))),
        search_boost: body.search_boost.and_then(|raw| errors.check("searchBoost", SearchBoost::new(raw))),
    };
    errors.into_result()?;
    Ok(changes)
}

/// Hides a product from the storefront (staff).
#[utoipa::path(post, path = "/products/{idOrSlug}/archive", tag = "catalog",
    params(("idOrSlug" = String, Path, description = "Product id or slug")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 200, description = "The archived product", body = ProductBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn archive_product(
    State(state): State<AppState>,
    Path(id_or_slug): Path<String>,
) -> Result<Response, ApiError> {
    let id = product_id(&state, &id_or_slug).await?;
    let product = state.catalog().archive_product(id).await?;
    Ok((StatusCode::OK, axum::Json(ProductBody::from(product))).into_response())
}

/// Deletes a product (staff).
#[utoipa::path(delete, path = "/products/{idOrSlug}", tag = "catalog",
    params(("idOrSlug" = String, Path, description = "Product id or slug")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn delete_product(
    State(state): State<AppState>,
    Path(id_or_slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = product_id(&state, &id_or_slug).await?;
    state.catalog().delete_product(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The id of a product named by id or slug (archived products included: these are staff routes).
async fn product_id(state: &AppState, id_or_slug: &str) -> Result<Uuid, ApiError> {
    if let Ok(id) = Uuid::parse_str(id_or_slug) {
        return Ok(id);
    }
    let key = IdOrSlug::parse(id_or_slug).ok_or(ApiError::NotFound)?;
    Ok(state.catalog().get_product(&key, true).await?.id)
}

/// The given slug, or one derived from the name (a missing name is reported under `name`).
fn slug_or_derived(errors: &mut ValidationErrors, slug: Option<&str>, name: Option<&str>) -> Option<Slug> {
    match (slug, name) {
        (Some(slug), _) => errors.check("slug", Slug::parse(slug)),
        (None, Some(name)) if !name.trim().is_empty() => errors.check("slug", Slug::from_name(name)),
        (None, _) => None,
    }
}

fn created<T: serde::Serialize>(location: &str, body: &T) -> Response {
    with_location((StatusCode::CREATED, axum::Json(body)).into_response(), location)
}

pub(super) fn max_age(state: &AppState) -> u64 {
    state.settings().catalog_max_age.as_secs()
}
