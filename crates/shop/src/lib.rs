//! Shopkeep's domain: value types, use-case services and the ports (traits) that adapters implement.
//!
//! This crate knows nothing of HTTP or SQL: `shop-api` turns requests into calls on the services
//! here, and the `store-*` crates implement the repository traits in [`ports`].

#![forbid(unsafe_code)]

pub mod accounts;
pub mod audit;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod flags;
pub mod jobs;
pub mod mail;
pub mod orders;
pub mod pagination;
pub mod ports;
pub mod search;
pub mod secrets;
pub mod validation;
pub mod webhooks;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Conflict, Error, StoreError};
pub use pagination::{Page, PageRequest, SortOrder};
pub use ports::Store;
pub use validation::{FieldError, ValidationErrors};

/// A new time-ordered identifier (UUIDv7): unique, unguessable enough for URLs, index friendly.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
