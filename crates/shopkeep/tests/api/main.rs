//! API tests: the real HTTP surface, each test against a fresh SQLite and a fresh PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
/// The real SMTP server (aiosmtpd) and `.eml` reader of the mailer crate's tests, shared.
#[path = "../../../mailer/tests/support/mod.rs"]
mod smtp_support;

mod accounts;
mod caching;
mod catalog;
mod controls;
mod flags;
mod guests;
mod health;
mod jobs;
mod limits;
mod mail;
mod oidc;
mod orders;
mod payments;
mod pgbouncer;
mod recovery;
mod replicas;
mod search;
mod stability;
mod stack;
mod webhooks;
