//! The catalog: categories and products, with exact prices and never-negative stock.

mod model;
mod money;
mod service;
mod slug;

pub use model::{
    Category, CategoryChanges, CategorySort, IdOrSlug, NewCategory, NewProduct, Product, ProductChanges, ProductQuery,
    ProductSort, ProductStatus, SearchBoost, Stock, Text,
};
pub use money::{Currency, MINOR_DIGITS, Money, format_minor, parse_amount};
pub use service::{CatalogService, NewProductInput};
pub use slug::Slug;
