//! The naive baseline for `bench/catalog.sh`: axum on tokio answering `GET /health/live` with
//! the same JSON body as the shop and nothing else — no middleware, no state, no logging — so
//! the benchmark can tell what the framework costs apart from what Shopkeep's stack adds.
//!
//!   bare_live 127.0.0.1:18095

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18095".to_owned());
    let routes = Router::new()
        .route("/health/live", get(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#) }));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, routes).await
}
