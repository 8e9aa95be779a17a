//! Search routes: the product list's `q` and `facets` (called by the list handler in
//! `catalog.rs`) and the type-ahead `/products/suggestions`, with their rate limit and the
//! `search_*` metrics.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use shop::ValidationErrors;
use shop::catalog::{ProductQuery, ProductSort};
use shop::search::{FacetRequest, SearchOrder, SearchText, Typos};
use utoipa::IntoParams;

use super::accounts::client_ip;
use super::caching::public_json;
use super::catalog::max_age;
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::Query;
use crate::rate_limits::ClientIp;
use crate::state::AppState;
use crate::wire::{
    CategorySuggestionBody, FacetsBody, ProductListBody, ProductListItem, ProductSuggestionBody, SearchInfoBody,
    SuggestionsBody,
};

/// The list answering `q`: ranked hits (relevance, or `sort_by` when given) with what was
/// searched for, and the facets asked for.
#[allow(clippy::too_many_arguments)]
pub(super) async fn search_list(
    state: &AppState,
    caller: Option<&shop::accounts::Caller>,
    headers: &HeaderMap,
    client: IpAddr,
    text: &SearchText,
    filters: &ProductQuery,
    sort_by: Option<ProductSort>,
    facets: FacetRequest,
) -> Result<ProductListBody, ApiError> {
    state.inner.rate_limits.before_search(client).await?;
    let order = match sort_by {
        Some(sort) => SearchOrder::By(sort, filters.sort_order),
        None => SearchOrder::Relevance,
    };
    let typos = typos_for(state, caller, headers, client);
    let started = std::time::Instant::now();
    let results = state.search().search_with(text, filters, order, facets, typos).await?;
    record_search("search", started, results.page.total, results.typo_fallback);
    let mut body = list_body(results.page.map(ProductListItem::from));
    body.search = Some(SearchInfoBody {
        query: text.as_str().to_owned(),
        corrected_query: results.corrected_query,
        typo_tolerant: results.typo_fallback,
    });
    body.facets = results.facets.map(FacetsBody::from);
    Ok(body)
}

/// Typo tolerance unless the `fuzzy_search` flag is off for this caller.
fn typos_for(state: &AppState, caller: Option<&shop::accounts::Caller>, headers: &HeaderMap, client: IpAddr) -> Typos {
    let facts = crate::flags::RequestFlags::of(state, headers, Some(client));
    match state.flags().is_enabled(shop::flags::known::FUZZY_SEARCH, &facts.context(caller, None), true) {
        true => Typos::Tolerated,
        false => Typos::Exact,
    }
}

/// The plain filtered list with the facets asked for (no `q`); limited like a search.
pub(super) async fn facet_list(
    state: &AppState,
    client: IpAddr,
    filters: &ProductQuery,
    wanted: FacetRequest,
) -> Result<ProductListBody, ApiError> {
    state.inner.rate_limits.before_search(client).await?;
    let page = state.catalog().list_products(filters).await?;
    let facets = state.search().facets(filters, wanted).await?;
    let mut body = list_body(page.map(ProductListItem::from));
    body.facets = Some(FacetsBody::from(facets));
    Ok(body)
}

/// A page of the product list as the wire shows it (no search, no facets yet).
pub(super) fn list_body(page: shop::Page<ProductListItem>) -> ProductListBody {
    ProductListBody {
        total: page.total,
        page: page.request.page(),
        limit: page.request.limit(),
        total_pages: page.total_pages(),
        data: page.items,
        search: None,
        facets: None,
    }
}

/// Counts a search in the metrics: by kind, whether it found nothing, how long it took.
fn record_search(kind: &'static str, started: std::time::Instant, total: u64, typo_fallback: bool) {
    let outcome = if total == 0 { "zero_results" } else { "hits" };
    metrics::counter!("search_requests_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("search_duration_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
    if typo_fallback {
        metrics::counter!("search_typo_fallbacks_total", "kind" => kind).increment(1);
    }
    if total == 0 {
        metrics::counter!("search_zero_results_total", "kind" => kind).increment(1);
    }
}

/// Query of the type-ahead.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuggestionsQuery {
    /// What was typed so far, 1–200 characters: its last word is completed (unless it ends
    /// with a space), earlier words are typo-tolerant.
    q: Option<String>,
    /// Suggestions of each kind, 1–20 (default 8).
    limit: Option<String>,
}

/// Type-ahead: active products and categories completing what was typed.
#[utoipa::path(get, path = "/products/suggestions", tag = "catalog", params(SuggestionsQuery), security(()),
    responses(
        (status = 200, description = "Products and categories completing `q` (cacheable)", body = SuggestionsBody),
        (status = 429, description = "Too many searches from this address", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn suggestions(
    State(state): State<AppState>,
    crate::auth::MaybeAuthenticated(caller): crate::auth::MaybeAuthenticated,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Query(query): Query<SuggestionsQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let text = match query.q.as_deref() {
        Some(raw) => errors.check("q", SearchText::parse(raw)),
        None => {
            errors.add("q", "is required");
            None
        }
    };
    let limit = match query.limit.as_deref() {
        None => Some(8),
        Some(raw) => errors.check(
            "limit",
            raw.parse::<u32>()
                .ok()
                .filter(|limit| (1..=shop::search::MAX_SUGGESTIONS).contains(limit))
                .ok_or_else(|| format!("must be a whole number between 1 and {}", shop::search::MAX_SUGGESTIONS)),
        ),
    };
    errors.into_result()?;
    let (Some(text), Some(limit)) = (text, limit) else {
        return Err(ApiError::Invalid(ValidationErrors::new()));
    };
    let client = client_ip(client);
    state.inner.rate_limits.before_search(client).await?;
    let typos = typos_for(&state, caller.as_ref(), &headers, client);
    let started = std::time::Instant::now();
    let found = state.search().suggest_with(&text, limit, typos).await?;
    let total = (found.products.len() + found.categories.len()) as u64;
    record_search("suggestions", started, total, false);
    let body = SuggestionsBody {
        products: found.products.into_iter().map(ProductSuggestionBody::from).collect(),
        categories: found.categories.into_iter().map(CategorySuggestionBody::from).collect(),
    };
    // Suggestions shaped per caller (the `fuzzy_search` flag has rules) are not for shared caches.
    if state.flags().varies_by_caller(shop::flags::known::FUZZY_SEARCH) {
        return Ok(match super::caching::Rendered::of(&body) {
            Ok(rendered) => super::caching::rendered_response(
                &headers,
                rendered,
                axum::http::HeaderValue::from_static("private, no-cache"),
            ),
            Err(error) => axum::response::IntoResponse::into_response(error),
        });
    }
    Ok(public_json(&headers, &body, max_age(&state)))
}
