//! Sign-in with OpenID Connect against a real provider: `scripts/oidc/provider.mjs`, the
//! `oidc-provider` package on Node.js (installed by `scripts/services`), started per test. The
//! test drives the provider's own login and consent pages like a browser would.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use shopkeep::config::{OidcProviderConfig, Secret};

use crate::helpers::{Backend, PASSWORD, TestApp, problem, spawn_app_with};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const CLIENT_ID: &str = "shopkeep-test";
const CLIENT_SECRET: &str = "a-client-secret-for-tests-only";

/// The provider process, killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// `id_token_claims`: the provider also puts email and name into the ID token (by default
    /// they are only at its userinfo endpoint).
    fn start(redirect_uri: &str, id_token_claims: bool) -> Self {
        let script = Path::new(REPO).join("scripts/oidc/provider.mjs");
        assert!(
            Path::new(REPO).join("scripts/oidc/node_modules/oidc-provider").exists(),
            "scripts/oidc/node_modules is missing: run scripts/services, which installs the OpenID Connect \
             provider these tests sign in with"
        );
        let mut child = Command::new("node")
            .arg(script)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URIS", redirect_uri)
            .env("OIDC_PORT", "0")
            .env("OIDC_ID_TOKEN_CLAIMS", if id_token_claims { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs scripts/oidc/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(issuer) = line.strip_prefix("issuer ") {
                    let _ = sender.send(issuer.trim().to_owned());
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(issuer) => Self { child, issuer },
            Err(_) => {
                let _ = child.kill();
                panic!("the OpenID Connect provider did not start");
            }
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for the shop, so its callback URL can be registered with the provider first.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// The shop (configured with provider `demo`) and the running provider.
async fn shop_with_provider(backend: Backend) -> (TestApp, Provider) {
    shop_with_provider_and(backend, false, |_| {}).await
}

async fn shop_with_provider_and(
    backend: Backend,
    id_token_claims: bool,
    customise: impl FnOnce(&mut shopkeep::config::Config),
) -> (TestApp, Provider) {
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/v1/auth/oidc/demo/callback");
    let provider = Provider::start(&redirect, id_token_claims);
    let issuer = provider.issuer.clone();
    let app = spawn_app_with(backend, |config| {
        customise(config);
        config.server.listen = format!("127.0.0.1:{port}");
        config.oidc.providers.insert(
            "demo".into(),
            OidcProviderConfig {
                issuer,
                client_id: CLIENT_ID.into(),
                client_secret: Some(Secret::new(CLIENT_SECRET)),
                redirect_url: redirect,
                ..OidcProviderConfig::default()
            },
        );
    })
    .await;
    (app, provider)
}

macro_rules! oidc_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let (app, provider) = super::shop_with_provider(crate::helpers::Backend::Sqlite).await;
                    super::$name(&app, &provider).await;
                    app.stop().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let (app, provider) = super::shop_with_provider(crate::helpers::Backend::Postgres).await;
                    super::$name(&app, &provider).await;
                    app.stop().await;
                }
            }
        )*
    };
}

oidc_tests!(
    a_new_customer_signs_in_and_comes_back_to_the_same_account,
    a_verified_account_is_linked_only_through_verified_addresses,
    an_address_the_provider_has_not_verified_makes_no_account,
    callbacks_are_bound_to_the_browser_and_used_once,
    refusals_of_the_provider_and_bad_input_are_clear_errors,
    a_link_is_unlinked_once_the_account_has_another_way_in,
);

fn location(response: &reqwest::Response) -> String {
    response.headers().get(header::LOCATION).and_then(|value| value.to_str().ok()).expect("a Location").to_owned()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
}

/// Starts a sign-in at the shop and returns the provider's authorization URL.
async fn start(app: &TestApp, browser: &Client, return_to: &str) -> String {
    let started =
        browser.get(app.url(&format!("/api/v1/auth/oidc/demo/start?returnTo={return_to}"))).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::FOUND);
    let cookie = set_cookie(&started, "shopkeep_oidc=").expect("the pending sign-in's cookie is set");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert_eq!(started.headers()[header::CACHE_CONTROL], "private, no-store");
    location(&started)
}

/// The `Set-Cookie` header starting with `prefix`, if any.
fn set_cookie(response: &reqwest::Response, prefix: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(prefix))
        .map(str::to_owned)
}

/// Goes through the provider's login (as `login`) and consent pages like a browser; returns
/// the URL the provider sends the browser back to (the shop's callback).
async fn sign_in_at_provider(provider: &Provider, browser: &Client, authorization_url: &str, login: &str) -> String {
    let mut url = authorization_url.to_owned();
    for _ in 0..10 {
        if url.contains("/api/v1/auth/oidc/") {
            return url;
        }
        let page = browser.get(&url).send().await.unwrap();
        if page.status().is_redirection() {
            url = absolute(&provider.issuer, &location(&page));
            continue;
        }
        assert_eq!(page.status(), StatusCode::OK, "a provider page at {url}");
        let html = page.text().await.unwrap();
        let form: Vec<(&str, &str)> = if html.contains(r#"name="prompt" value="login""#) {
            vec![("prompt", "login"), ("login", login), ("password", "any password")]
        } else if html.contains(r#"name="prompt" value="consent""#) {
            vec![("prompt", "consent")]
        } else {
            panic!("an unexpected provider page: {html}");
        };
        let submitted = browser.post(&url).form(&form).send().await.unwrap();
        assert!(submitted.status().is_redirection(), "the provider accepted the form: {}", submitted.status());
        url = absolute(&provider.issuer, &location(&submitted));
    }
    panic!("the provider never sent the browser back");
}

/// A whole sign-in as `login`, returning the callback's response.
async fn sign_in(app: &TestApp, provider: &Provider, browser: &Client, login: &str) -> reqwest::Response {
    let authorization = start(app, browser, "/account").await;
    let callback = sign_in_at_provider(provider, browser, &authorization, login).await;
    browser.get(callback).send().await.unwrap()
}

async fn me(app: &TestApp, browser: &Client) -> Value {
    let response = browser.get(app.url("/api/v1/users/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn a_new_customer_signs_in_and_comes_back_to_the_same_account(app: &TestApp, provider: &Provider) {
    let browser = app.new_client();
    let authorization = start(app, &browser, "/account").await;
    assert!(authorization.starts_with(&provider.issuer), "{authorization}");
    for parameter in ["code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "scope=openid"] {
        assert!(authorization.contains(parameter), "{parameter} in {authorization}");
    }
    let callback = sign_in_at_provider(provider, &browser, &authorization, "alice@example.test").await;
    let signed_in = browser.get(&callback).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::FOUND);
    assert_eq!(location(&signed_in), "http://localhost:8080/account");
    let session = set_cookie(&signed_in, "shopkeep_session=").expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    let cleared = set_cookie(&signed_in, "shopkeep_oidc=").expect("the pending sign-in's cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let user = me(app, &browser).await;
    assert_eq!(user["email"], "alice@example.test");
    assert_eq!(user["emailVerified"], true);
    assert_eq!(user["role"], "customer");
    let identities: Value =
        browser.get(app.url("/api/v1/users/me/identities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(identities[0]["issuer"], provider.issuer.as_str());
    assert_eq!(identities[0]["email"], "alice@example.test");
    // The account has no password: signing in with one fails like any wrong password.
    let with_password = app
        .api(reqwest::Method::POST, "/sessions")
        .json(&json!({ "email": "alice@example.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    problem(with_password, StatusCode::UNAUTHORIZED).await;
    // Another browser signing in as the same person reaches the same account.
    let phone = app.new_client();
    let again = sign_in(app, provider, &phone, "alice@example.test").await;
    assert_eq!(again.status(), StatusCode::FOUND);
    assert_eq!(me(app, &phone).await["id"], user["id"]);
}

async fn a_verified_account_is_linked_only_through_verified_addresses(app: &TestApp, provider: &Provider) {
    // An account whose owner has verified the address.
    let owner = app.new_client();
    let signed_up = owner
        .post(app.url("/api/v1/users"))
        .json(&json!({ "email": "bob@example.test", "password": PASSWORD, "name": "Bob" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), StatusCode::CREATED);
    let account: Value = signed_up.json().await.unwrap();
    // The provider's address is not verified: no link, whoever typed it there.
    let stranger = app.new_client();
    let refused = sign_in(app, provider, &stranger, "unverified:bob@example.test").await;
    assert_eq!(problem(refused, StatusCode::BAD_REQUEST).await["errors"][0]["field"], "email");
    // The provider verified it, but the account's owner has not yet: no link either.
    let early = sign_in(app, provider, &app.new_client(), "bob@example.test").await;
    let early = problem(early, StatusCode::CONFLICT).await;
    assert!(early["detail"].as_str().unwrap().contains("verified"), "{early}");
    // Once the owner confirms the address, the provider's verified address links the account.
    let mail = app.outbox_with(1).await;
    let text = &mail[0].mail.text;
    let token = text[text.find("token=").unwrap() + 6..].split_whitespace().next().unwrap().to_owned();
    let confirmed = app
        .api(reqwest::Method::POST, "/email-verifications/confirm")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    let browser = app.new_client();
    let linked = sign_in(app, provider, &browser, "bob@example.test").await;
    assert_eq!(linked.status(), StatusCode::FOUND);
    assert_eq!(me(app, &browser).await["id"], account["id"]);
    // A disabled account cannot be signed in to through its link either.
    let admin = app.signed_in("admin@example.test", shop::accounts::Role::Admin).await;
    let id = account["id"].as_str().unwrap();
    let disabled =
        admin.patch(app.url(&format!("/api/v1/users/{id}"))).json(&json!({ "disabled": true })).send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    let refused = sign_in(app, provider, &app.new_client(), "bob@example.test").await;
    problem(refused, StatusCode::UNAUTHORIZED).await;
}

async fn an_address_the_provider_has_not_verified_makes_no_account(app: &TestApp, provider: &Provider) {
    // Someone types a stranger's address at the provider, which does not verify it: nothing is
    // made, so the address stays free for its owner.
    let squatter = app.new_client();
    let refused = sign_in(app, provider, &squatter, "unverified:carol@example.test").await;
    let refused = problem(refused, StatusCode::BAD_REQUEST).await;
    assert_eq!(refused["errors"][0]["field"], "email");
    assert_eq!(squatter.get(app.url("/api/v1/users/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let owner = app
        .new_client()
        .post(app.url("/api/v1/users"))
        .json(&json!({ "email": "carol@example.test", "password": PASSWORD, "name": "Carol" }))
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), StatusCode::CREATED, "the owner can still sign up");
    // A provider that shares no address cannot make an account either.
    let nameless = sign_in(app, provider, &app.new_client(), "noemail:dave").await;
    let nameless = problem(nameless, StatusCode::BAD_REQUEST).await;
    assert_eq!(nameless["errors"][0]["field"], "email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_challenged_on_sqlite() {
    staff_on_a_new_device_confirm_by_mail_and_a_sign_in_ends_the_previous_session(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_challenged_on_postgres() {
    staff_on_a_new_device_confirm_by_mail_and_a_sign_in_ends_the_previous_session(Backend::Postgres).await;
}

async fn staff_on_a_new_device_confirm_by_mail_and_a_sign_in_ends_the_previous_session(backend: Backend) {
    let (shop, idp) = shop_with_provider_and(backend, false, |config| {
        config.accounts.login_challenge_roles = vec!["staff".into()];
    })
    .await;
    let (app, provider) = (&shop, &idp);
    // A browser with a session already (a guest here) signs in: that session ends.
    let browser = app.new_client();
    assert_eq!(browser.post(app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
    let guest = me(app, &browser).await;
    let signed_in = sign_in(app, provider, &browser, "gina@example.test").await;
    assert_eq!(signed_in.status(), StatusCode::FOUND);
    let user = me(app, &browser).await;
    assert_ne!(user["id"], guest["id"]);
    // An admin makes her staff; staff sign-ins from unknown devices wait for a mailed link.
    let admin = app.signed_in("root@example.test", shop::accounts::Role::Admin).await;
    let id = user["id"].as_str().unwrap();
    let promoted =
        admin.patch(app.url(&format!("/api/v1/users/{id}"))).json(&json!({ "role": "staff" })).send().await.unwrap();
    assert_eq!(promoted.status(), StatusCode::OK);
    let laptop = app.new_client();
    let held = sign_in(app, provider, &laptop, "gina@example.test").await;
    assert_eq!(held.status(), StatusCode::ACCEPTED);
    assert!(set_cookie(&held, "shopkeep_session=").is_none(), "no session yet");
    assert!(set_cookie(&held, "shopkeep_device=").is_some(), "the device gets its id");
    let body: Value = held.json().await.unwrap();
    assert_eq!(body["status"], "confirmationRequired");
    let mail = app.outbox_with(1).await;
    assert_eq!(mail[0].mail.to, "gina@example.test");
    let text = &mail[0].mail.text;
    let token = text[text.find("token=").unwrap() + 6..].split_whitespace().next().unwrap().to_owned();
    let confirmed = app
        .api(reqwest::Method::POST, "/login-challenges/confirm")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    let again = sign_in(app, provider, &laptop, "gina@example.test").await;
    assert_eq!(again.status(), StatusCode::FOUND, "the confirmed device signs in");
    assert_eq!(me(app, &laptop).await["role"], "staff");
    shop.stop().await;
}

async fn callbacks_are_bound_to_the_browser_and_used_once(app: &TestApp, provider: &Provider) {
    let browser = app.new_client();
    let authorization = start(app, &browser, "/").await;
    let callback = sign_in_at_provider(provider, &browser, &authorization, "erin@example.test").await;
    // Another browser (no pending sign-in cookie) cannot use the callback.
    let elsewhere = problem(app.http.get(&callback).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(elsewhere["errors"][0]["field"], "state");
    // A browser with a pending sign-in of its own, given someone else's callback: state mismatch.
    let victim = app.new_client();
    start(app, &victim, "/").await;
    let forced = problem(victim.get(&callback).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(forced["errors"][0]["field"], "state");
    let not_signed_in = victim.get(app.url("/api/v1/users/me")).send().await.unwrap();
    assert_eq!(not_signed_in.status(), StatusCode::UNAUTHORIZED);
    // The browser that started it completes it once; a replay finds nothing pending.
    let completed = browser.get(&callback).send().await.unwrap();
    assert_eq!(completed.status(), StatusCode::FOUND);
    let replayed = problem(browser.get(&callback).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(replayed["errors"][0]["field"], "state");
}

async fn refusals_of_the_provider_and_bad_input_are_clear_errors(app: &TestApp, provider: &Provider) {
    let unknown = app.http.get(app.url("/api/v1/auth/oidc/nope/start")).send().await.unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
    let unknown = app.http.get(app.url("/api/v1/auth/oidc/nope/callback?state=a&code=b")).send().await.unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
    for bad in ["https://evil.example/", "//evil.example", "account"] {
        let response =
            app.http.get(app.url("/api/v1/auth/oidc/demo/start")).query(&[("returnTo", bad)]).send().await.unwrap();
        let refused = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(refused["errors"][0]["field"], "returnTo", "{bad}");
    }
    // The person declines at the provider: the provider's error comes back through the callback.
    let browser = app.new_client();
    let authorization = start(app, &browser, "/").await;
    let state = url_parameter(&authorization, "state");
    let declined = browser
        .get(app.url("/api/v1/auth/oidc/demo/callback"))
        .query(&[("error", "access_denied"), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    let declined = problem(declined, StatusCode::BAD_REQUEST).await;
    assert_eq!(declined["errors"][0]["field"], "error");
    assert!(declined["errors"][0]["message"].as_str().unwrap().contains("access_denied"));
    // A forged code is refused by the provider.
    let authorization = start(app, &browser, "/").await;
    let state = url_parameter(&authorization, "state");
    let forged = browser
        .get(app.url("/api/v1/auth/oidc/demo/callback"))
        .query(&[("code", "forged"), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(problem(forged, StatusCode::BAD_REQUEST).await["errors"][0]["field"], "code");
    // A callback naming another issuer (RFC 9207 mix-up) is refused before any exchange.
    let authorization = start(app, &browser, "/").await;
    let callback = sign_in_at_provider(provider, &browser, &authorization, "frank@example.test").await;
    let mixed_up = callback.replace("iss=", "iss=https%3A%2F%2Fevil.example&was=");
    assert_eq!(
        problem(browser.get(&mixed_up).send().await.unwrap(), StatusCode::BAD_REQUEST).await["errors"][0]["field"],
        "code"
    );
}

async fn identities(app: &TestApp, client: &Client) -> Vec<Value> {
    let response = client.get(app.url("/api/v1/users/me/identities")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn unlink(app: &TestApp, client: &Client, id: &str) -> reqwest::RequestBuilder {
    client.delete(app.url(&format!("/api/v1/users/me/identities/{id}")))
}

async fn a_link_is_unlinked_once_the_account_has_another_way_in(app: &TestApp, provider: &Provider) {
    // An account made by the provider sign-in: no password, one link.
    let browser = app.new_client();
    assert_eq!(sign_in(app, provider, &browser, "ivy@example.test").await.status(), StatusCode::FOUND);
    let user = me(app, &browser).await;
    let linked = identities(app, &browser).await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0]["issuer"], provider.issuer.as_str());
    let id = linked[0]["id"].as_str().expect("an id").to_owned();
    // Its only way to sign in is not unlinked.
    let refused = problem(unlink(app, &browser, &id).send().await.unwrap(), StatusCode::CONFLICT).await;
    assert!(refused["detail"].as_str().unwrap().contains("set a password first"), "{refused}");
    assert_eq!(identities(app, &browser).await, linked, "nothing changed");
    // Nobody else can unlink it, and they learn nothing: the same 404 as for an unknown id.
    problem(unlink(app, &app.http, &id).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let stranger = app.new_client();
    assert_eq!(sign_in(app, provider, &stranger, "jack@example.test").await.status(), StatusCode::FOUND);
    problem(unlink(app, &stranger, &id).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(unlink(app, &stranger, "no-such-link").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(unlink(app, &browser, "no-such-link").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    // A guest has no links: every id is unknown.
    let guest = app.new_client();
    assert_eq!(guest.post(app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
    assert!(identities(app, &guest).await.is_empty());
    problem(unlink(app, &guest, &id).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(identities(app, &browser).await, linked, "still linked");

    // Once the owner sets a password (through a reset), the link can go.
    let requested =
        app.api(reqwest::Method::POST, "/password-resets").json(&json!({ "email": "ivy@example.test" })).send().await;
    assert_eq!(requested.unwrap().status(), StatusCode::ACCEPTED);
    let mail = app.outbox_with(1).await;
    let text = &mail[0].mail.text;
    let token = text[text.find("token=").unwrap() + 6..].split_whitespace().next().unwrap().to_owned();
    let reset = app
        .api(reqwest::Method::POST, "/password-resets/confirm")
        .json(&json!({ "token": token, "newPassword": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let owner = app.new_client();
    let logged_in = owner
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ivy@example.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(logged_in.status(), StatusCode::CREATED);
    assert_eq!(unlink(app, &owner, &id).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert!(identities(app, &owner).await.is_empty());
    problem(unlink(app, &owner, &id).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let mail = app.outbox_with(2).await;
    let notice = mail.iter().find(|sent| sent.mail.subject.contains("unlinked")).expect("the owner is told");
    assert_eq!(notice.mail.to, "ivy@example.test");
    assert!(notice.mail.text.contains(&provider.issuer), "{}", notice.mail.text);
    // Signing in with the provider again links it again (the address is verified on both sides).
    let again = app.new_client();
    assert_eq!(sign_in(app, provider, &again, "ivy@example.test").await.status(), StatusCode::FOUND);
    assert_eq!(me(app, &again).await["id"], user["id"], "the same account");
    let relinked = identities(app, &owner).await;
    assert_eq!(relinked.len(), 1);
    assert_eq!(relinked[0]["id"], id.as_str(), "the same issuer and subject, the same id");
}

/// A provider that puts the address into the ID token itself (no userinfo call needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_may_come_in_the_id_token_itself() {
    let (app, provider) = shop_with_provider_and(Backend::Sqlite, true, |_| {}).await;
    let browser = app.new_client();
    let signed_in = sign_in(&app, &provider, &browser, "hana@example.test").await;
    assert_eq!(signed_in.status(), StatusCode::FOUND);
    let user = me(&app, &browser).await;
    assert_eq!((user["email"].as_str(), user["name"].as_str()), (Some("hana@example.test"), Some("hana")));
    app.stop().await;
}

fn url_parameter(url: &str, name: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    parsed.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned()).expect("parameter")
}

/// With the provider unreachable, a sign-in fails fast with 503 and `Retry-After`, and the
/// provider's breaker is on the status page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_a_503() {
    let port = free_port();
    let closed = free_port();
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.server.listen = format!("127.0.0.1:{port}");
        config.admin.token = Some(Secret::new("an-admin-token-for-tests"));
        config.oidc.timeout_secs = 2;
        config.oidc.providers.insert(
            "down".into(),
            OidcProviderConfig {
                issuer: format!("http://127.0.0.1:{closed}"),
                client_id: CLIENT_ID.into(),
                redirect_url: format!("http://127.0.0.1:{port}/api/v1/auth/oidc/down/callback"),
                ..OidcProviderConfig::default()
            },
        );
    })
    .await;
    let started = std::time::Instant::now();
    let response = app.http.get(app.url("/api/v1/auth/oidc/down/start")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "answered within the provider's time budget");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let status: Value = app
        .http
        .get(app.admin_url("/admin/v1/status"))
        .bearer_auth("an-admin-token-for-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.to_string().contains("oidc-down"), "{status}");
    app.stop().await;
}
