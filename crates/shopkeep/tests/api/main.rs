//! API tests: the real HTTP surface, each test against a fresh SQLite and a fresh PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod accounts;
mod catalog;
mod health;
mod jobs;
mod limits;
mod stability;
mod stack;
