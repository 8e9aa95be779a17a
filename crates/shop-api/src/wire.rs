//! Wire types: the JSON bodies of requests and responses (camelCase), and their conversion from
//! domain values. Request bodies hold optional fields so that every missing or invalid field is
//! reported at once after deserialisation.

use serde::{Deserialize, Serialize};
use shop::Page;
use shop::accounts::{ApiToken, ExternalIdentity, User};
use shop::catalog::{Category, Product};
use shop::orders::{CartLine, Order, OrderLine};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T: ToSchema> {
    pub data: Vec<T>,
    /// Matches across all pages.
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub total_pages: u64,
}

impl<T: ToSchema> Paged<T> {
    pub fn from_page<D>(page: Page<D>, convert: impl Fn(D) -> T) -> Self {
        let total_pages = page.total_pages();
        Self {
            total: page.total,
            page: page.request.page(),
            limit: page.request.limit(),
            total_pages,
            data: page.items.into_iter().map(convert).collect(),
        }
    }
}

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    pub id: Uuid,
    /// `null` for a guest.
    pub email: Option<String>,
    pub name: String,
    /// `customer`, `staff` or `admin`.
    pub role: String,
    pub disabled: bool,
    /// Whether the owner has confirmed the address (the link mailed at sign-up).
    pub email_verified: bool,
    /// An ephemeral guest account, until upgraded (`POST /users/me/upgrade`).
    pub guest: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: (!user.guest).then(|| user.email.as_str().to_owned()),
            name: user.name.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            disabled: user.disabled,
            email_verified: user.email_verified_at.is_some(),
            guest: user.guest,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Sign-up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignUpRequest {
    /// Normalised to lower case.
    pub email: Option<String>,
    /// 12–128 characters, not a well-known password.
    pub password: Option<String>,
    /// 1–100 characters.
    pub name: Option<String>,
}

/// Asks for a password reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub email: Option<String>,
}

/// Sets a new password with the token of a reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordResetConfirmation {
    /// The `token` of the link in the mail.
    pub token: Option<String>,
    /// 12–128 characters, not a well-known password.
    pub new_password: Option<String>,
}

/// A correct login from a device new to a challenged account: nothing is signed in yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginChallengeBody {
    /// Always `confirmationRequired`.
    pub status: &'static str,
    pub detail: &'static str,
}

/// Confirms a sign-in from a new device with the token of the mailed link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginChallengeConfirmation {
    pub token: Option<String>,
}

/// Confirms an email address with the token of the verification link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailVerificationConfirmation {
    pub token: Option<String>,
}

/// Login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogInRequest {
    pub email: Option<String>,
    pub password: Option<String>,
}

/// Changes to one's own account. Changing the password needs the current one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMeRequest {
    pub name: Option<String>,
    pub current_password: Option<String>,
    pub new_password: Option<String>,
}

/// An admin's changes to a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminUpdateUserRequest {
    /// `customer`, `staff` or `admin`.
    pub role: Option<String>,
    /// A disabled user cannot sign in; their sessions end at once.
    pub disabled: Option<bool>,
}

/// A new personal API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiTokenRequest {
    /// What the token is for, 1–100 characters.
    pub name: Option<String>,
    /// Days until the token expires (1–365); without it the token does not expire.
    pub expires_in_days: Option<i64>,
}

/// A personal API token (without its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenBody {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<ApiToken> for ApiTokenBody {
    fn from(token: ApiToken) -> Self {
        Self {
            id: token.id,
            name: token.name,
            created_at: token.created_at,
            expires_at: token.expires_at,
            last_used_at: token.last_used_at,
        }
    }
}

/// A newly created API token with its secret, shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiTokenBody {
    #[serde(flatten)]
    pub token: ApiTokenBody,
    /// Send as `Authorization: Bearer <token>`. Store it now: it cannot be shown again.
    pub token_secret: String,
}

/// A category.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Category> for CategoryBody {
    fn from(category: Category) -> Self {
        Self {
            id: category.id,
            name: category.name.as_str().to_owned(),
            slug: category.slug.as_str().to_owned(),
            description: category.description.as_str().to_owned(),
            created_at: category.created_at,
            updated_at: category.updated_at,
        }
    }
}

/// A new category, or changes to one (PATCH: only the fields given change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CategoryRequest {
    /// 1–200 characters; required on create.
    pub name: Option<String>,
    /// Lowercase letters, digits and hyphens; derived from the name when omitted on create.
    pub slug: Option<String>,
    /// Up to 10,000 characters.
    pub description: Option<String>,
}

/// A product.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub description: String,
    /// Exact decimal amount, e.g. `"12.99"`.
    #[schema(example = "12.99")]
    pub price: String,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    pub stock: i64,
    pub category_id: Uuid,
    /// `active` or `archived` (archived products are hidden from the storefront).
    pub status: String,
    /// Grows with every change.
    pub version: i64,
    /// The merchant's search boost, −1000 to 1000: among equally good search hits, higher first.
    pub search_boost: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Product> for ProductBody {
    fn from(product: Product) -> Self {
        Self {
            id: product.id,
            name: product.name.as_str().to_owned(),
            slug: product.slug.as_str().to_owned(),
            description: product.description.as_str().to_owned(),
            price: product.price.amount_string(),
            currency: product.price.currency().as_str().to_owned(),
            stock: product.stock.units(),
            category_id: product.category_id,
            status: product.status.as_str().to_owned(),
            version: product.version,
            search_boost: product.search_boost.value(),
            created_at: product.created_at,
            updated_at: product.updated_at,
        }
    }
}

/// A page of the product list; with `q`, each item carries how it matched and `search` says
/// what was searched for; with `facets`, the counts asked for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductListBody {
    pub data: Vec<ProductListItem>,
    /// Matches across all pages.
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub total_pages: u64,
    /// Present when `q` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchInfoBody>,
    /// Present when `facets` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<FacetsBody>,
}

/// A product of the list, and with `q` how it matched.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductListItem {
    #[serde(flatten)]
    pub product: ProductBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchHitBody>,
}

/// How a product matched the query.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHitBody {
    /// The index's relevance score: higher is better, comparable within one response only.
    pub score: f64,
    /// Query words found in the product.
    pub matched_words: u32,
    /// Typos of the matched words (0: exact).
    pub typos: u32,
    pub highlight: HighlightBody,
}

/// HTML-escaped text with the matched words in `<mark>…</mark>`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HighlightBody {
    #[schema(example = "<mark>Laptop</mark> Stand")]
    pub name: String,
    /// About 160 characters of the description around the first match, `…` where cut.
    pub description: String,
}

/// What was searched for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchInfoBody {
    /// `q` as given (trimmed).
    pub query: String,
    /// The query with unknown words replaced by their corrections, when typo tolerance
    /// found what the words as typed did not; else `null`.
    #[schema(example = "laptop")]
    pub corrected_query: Option<String>,
    /// Whether typo-tolerant matching ran (exact matching found too few hits).
    pub typo_tolerant: bool,
}

/// Facet counts over every hit (all pages) of the query and filters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacetsBody {
    /// Most products first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Vec<CategoryFacetBody>>,
    /// Fixed buckets, empty ones included; `to` is exclusive, `null` for the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Vec<PriceFacetBody>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<StockFacetBody>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryFacetBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceFacetBody {
    #[schema(example = "10.00")]
    pub from: String,
    #[schema(example = "25.00")]
    pub to: Option<String>,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockFacetBody {
    pub in_stock: u64,
    pub out_of_stock: u64,
}

impl From<shop::search::Facets> for FacetsBody {
    fn from(facets: shop::search::Facets) -> Self {
        Self {
            category: facets.categories.map(|categories| {
                categories
                    .into_iter()
                    .map(|c| CategoryFacetBody { id: c.id, name: c.name, slug: c.slug, count: c.count })
                    .collect()
            }),
            price: facets.prices.map(|prices| {
                prices
                    .into_iter()
                    .map(|bucket| PriceFacetBody {
                        from: shop::catalog::format_minor(bucket.from_minor),
                        to: bucket.to_minor.map(shop::catalog::format_minor),
                        count: bucket.count,
                    })
                    .collect()
            }),
            in_stock: facets.stock.map(|(in_stock, out_of_stock)| StockFacetBody { in_stock, out_of_stock }),
        }
    }
}

impl From<Product> for ProductListItem {
    fn from(product: Product) -> Self {
        Self { product: ProductBody::from(product), search: None }
    }
}

impl From<shop::search::SearchHit> for ProductListItem {
    fn from(hit: shop::search::SearchHit) -> Self {
        Self {
            search: Some(SearchHitBody {
                score: hit.score,
                matched_words: hit.matched_words,
                typos: hit.typos,
                highlight: HighlightBody { name: hit.name_highlight, description: hit.description_snippet },
            }),
            product: ProductBody::from(hit.product),
        }
    }
}

/// Type-ahead answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuggestionsBody {
    pub products: Vec<ProductSuggestionBody>,
    pub categories: Vec<CategorySuggestionBody>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductSuggestionBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// The name, HTML-escaped, matched words in `<mark>`.
    #[schema(example = "<mark>Laptop</mark> Stand")]
    pub highlight: String,
    #[schema(example = "12.99")]
    pub price: String,
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategorySuggestionBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
}

impl From<shop::search::SuggestedProduct> for ProductSuggestionBody {
    fn from(suggested: shop::search::SuggestedProduct) -> Self {
        let product = suggested.product;
        Self {
            id: product.id,
            name: product.name.as_str().to_owned(),
            slug: product.slug.as_str().to_owned(),
            highlight: suggested.name_highlight,
            price: product.price.amount_string(),
            currency: product.price.currency().as_str().to_owned(),
        }
    }
}

impl From<Category> for CategorySuggestionBody {
    fn from(category: Category) -> Self {
        Self { id: category.id, name: category.name.as_str().to_owned(), slug: category.slug.as_str().to_owned() }
    }
}

/// A new product, or changes to one (PATCH: only the fields given change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductRequest {
    /// 1–200 characters; required on create.
    pub name: Option<String>,
    /// Derived from the name when omitted on create.
    pub slug: Option<String>,
    pub description: Option<String>,
    /// Decimal string with at most 2 decimal places; required on create.
    #[schema(example = "12.99")]
    pub price: Option<String>,
    /// ISO 4217 code; required on create.
    #[schema(example = "EUR")]
    pub currency: Option<String>,
    /// Units in stock, 0 or more; required on create.
    pub stock: Option<i64>,
    /// Required on create.
    pub category_id: Option<String>,
    /// PATCH only: `active` or `archived`.
    pub status: Option<String>,
    /// −1000 to 1000 (default 0): among equally good search hits, the higher boost ranks first.
    pub search_boost: Option<i64>,
}

/// Health of the instance.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    /// `ok`, `degraded` (serving, with a dependency down that it can do without), `draining` or
    /// `unavailable`.
    pub status: String,
    /// Per dependency: `ok` or what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The shared rate-limit store, when one is configured: `ok`, or what is wrong and whether
    /// requests are let through (failing open) or refused (failing closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<String>,
    /// The shared cache tier, when one is configured: `ok`, or that it is unreachable and reads
    /// are served by the local tier and the database (the instance stays ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

/// An external identity provider account linked to the user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalIdentityBody {
    /// Names the link for `DELETE /users/me/identities/{id}`: derived from the issuer and the
    /// provider's subject, the same for as long as the link exists.
    pub id: String,
    /// The OpenID Connect issuer (`https://accounts.google.com`).
    pub issuer: String,
    /// The address the provider gave when the link was made.
    pub email: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<ExternalIdentity> for ExternalIdentityBody {
    fn from(identity: ExternalIdentity) -> Self {
        Self {
            id: identity.link_id(),
            issuer: identity.issuer,
            email: identity.email.map(|email| email.as_str().to_owned()),
            created_at: identity.created_at,
        }
    }
}

/// One line of the current cart.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLineBody {
    /// The product as it is now (price, stock, status).
    pub product: ProductBody,
    pub quantity: i64,
    /// Unit price × quantity, at today's price.
    #[schema(example = "25.98")]
    pub line_total: String,
    /// Whether the product is on sale with at least `quantity` in stock right now.
    pub available: bool,
}

/// The current cart. Totals are per currency only when every product shares one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartBody {
    pub items: Vec<CartLineBody>,
    /// Sum of quantities.
    pub item_count: i64,
    /// The sum of line totals, when every product has the same currency (else `null`).
    pub total: Option<String>,
    pub currency: Option<String>,
}

impl CartBody {
    pub fn from_lines(lines: Vec<CartLine>) -> Self {
        let currencies: std::collections::BTreeSet<String> =
            lines.iter().map(|line| line.product.price.currency().as_str().to_owned()).collect();
        let single = currencies.len() == 1;
        let total_minor: i64 = lines.iter().map(|line| line.product.price.minor().saturating_mul(line.quantity)).sum();
        let item_count = lines.iter().map(|line| line.quantity).sum();
        let items = lines
            .into_iter()
            .map(|line| {
                let available = line.product.status == shop::catalog::ProductStatus::Active
                    && line.product.stock.units() >= line.quantity;
                CartLineBody {
                    line_total: shop::catalog::format_minor(line.product.price.minor().saturating_mul(line.quantity)),
                    available,
                    quantity: line.quantity,
                    product: ProductBody::from(line.product),
                }
            })
            .collect();
        Self {
            items,
            item_count,
            total: single.then(|| shop::catalog::format_minor(total_minor)),
            currency: if single { currencies.into_iter().next() } else { None },
        }
    }
}

/// `PUT /carts/current/items/{productId}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetQuantityRequest {
    /// 0 removes the product; at most 99.
    pub quantity: Option<i64>,
}

/// A postal address.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressBody {
    pub name: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "DE")]
    pub country: Option<String>,
}

impl From<AddressBody> for shop::orders::ShippingAddressInput {
    fn from(body: AddressBody) -> Self {
        Self {
            name: body.name,
            line1: body.line1,
            line2: body.line2,
            city: body.city,
            postal_code: body.postal_code,
            country: body.country,
        }
    }
}

/// `POST /orders`: checks out the current cart.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutRequest {
    pub shipping_address: Option<AddressBody>,
}

/// One line of an order, as it was when ordered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineBody {
    /// `null` once the product was deleted.
    pub product_id: Option<Uuid>,
    pub name: String,
    pub unit_price: String,
    pub quantity: i64,
    pub line_total: String,
}

impl From<OrderLine> for OrderLineBody {
    fn from(line: OrderLine) -> Self {
        Self {
            line_total: shop::catalog::format_minor(line.total_minor()),
            unit_price: shop::catalog::format_minor(line.unit_price_minor),
            product_id: line.product_id,
            name: line.name,
            quantity: line.quantity,
        }
    }
}

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `pendingPayment`, `paid`, `fulfilled`, `cancelled` or `refunded`.
    pub status: String,
    pub total: String,
    pub currency: String,
    pub lines: Vec<OrderLineBody>,
    pub shipping_address: AddressBody,
    /// Paid through the built-in test-mode provider: nothing was charged.
    pub test_mode: bool,
    pub cancel_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub fulfilled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancelled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refunded_at: Option<OffsetDateTime>,
}

impl From<Order> for OrderBody {
    fn from(order: Order) -> Self {
        let address = order.shipping_address;
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status.api_name().to_owned(),
            total: shop::catalog::format_minor(order.total_minor),
            currency: order.currency.as_str().to_owned(),
            lines: order.lines.into_iter().map(OrderLineBody::from).collect(),
            shipping_address: AddressBody {
                name: Some(address.name),
                line1: Some(address.line1),
                line2: address.line2,
                city: Some(address.city),
                postal_code: Some(address.postal_code),
                country: Some(address.country),
            },
            test_mode: order.test_mode,
            cancel_reason: order.cancel_reason,
            created_at: order.created_at,
            updated_at: order.updated_at,
            paid_at: order.paid_at,
            fulfilled_at: order.fulfilled_at,
            cancelled_at: order.cancelled_at,
            refunded_at: order.refunded_at,
        }
    }
}
