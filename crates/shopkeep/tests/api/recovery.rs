//! Email verification after sign-up and password reset: links mailed by jobs, single-use
//! tokens, sessions ended by a reset, no enumeration, and rate limits on what sends mail.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, TestApp, problem, spawn_app_with};

both_backends!(
    sign_up_mails_a_verification_link_that_confirms_the_address,
    a_password_reset_link_works_once_and_ends_every_session,
    reset_and_verification_failure_paths
);

/// The token of the link in a mail's text.
fn token_in(text: &str) -> String {
    let start = text.find("token=").expect("a link with a token") + "token=".len();
    text[start..].split_whitespace().next().expect("token").to_owned()
}

async fn me(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    client.get(app.url("/api/v1/users/me")).send().await.unwrap()
}

async fn sign_up_mails_a_verification_link_that_confirms_the_address(app: &TestApp) {
    let client = app.new_client();
    let signed_up = client
        .post(app.url("/api/v1/users"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), StatusCode::CREATED);
    let body: Value = signed_up.json().await.unwrap();
    assert_eq!(body["emailVerified"], false);
    let outbox = app.outbox_with(1).await;
    let mail = &outbox[0].mail;
    assert_eq!(mail.to, "ada@example.com");
    assert!(mail.subject.contains("confirm your email"), "{}", mail.subject);
    assert!(mail.text.contains("http://localhost:8080/verify-email?token="), "{}", mail.text);
    let token = token_in(&mail.text);
    let confirm =
        |token: String| app.api(Method::POST, "/email-verifications/confirm").json(&json!({ "token": token }));
    assert_eq!(confirm(token.clone()).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let me: Value = me(&client, app).await.json().await.unwrap();
    assert_eq!(me["emailVerified"], true);
    let reused = problem(confirm(token).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(reused["errors"][0]["field"], "token");
}

async fn a_password_reset_link_works_once_and_ends_every_session(app: &TestApp) {
    let laptop = app.signed_in("ada@example.com", Role::Customer).await;
    let phone = app.new_client();
    let login = phone
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let request = |email: &str| app.api(Method::POST, "/password-resets").json(&json!({ "email": email }));
    assert_eq!(request("Ada@Example.com").send().await.unwrap().status(), StatusCode::ACCEPTED);
    // No enumeration: an unknown address gets the same answer, and no mail.
    assert_eq!(request("nobody@example.com").send().await.unwrap().status(), StatusCode::ACCEPTED);
    let jobs: Value = app
        .http
        .get(app.admin_url("/admin/v1/jobs?kind=accounts.send_password_reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["total"], 1, "{jobs}");
    let outbox = app.outbox_with(1).await;
    let mail = &outbox[0].mail;
    assert!(mail.subject.contains("reset your password"), "{}", mail.subject);
    let token = token_in(&mail.text);
    let confirm = |password: &str| {
        app.api(Method::POST, "/password-resets/confirm").json(&json!({ "token": token, "newPassword": password }))
    };
    // A weak password is refused without using up the token.
    let weak = problem(confirm("short").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(weak["errors"][0]["field"], "newPassword");
    let new_password = "a brand new passphrase 42";
    assert_eq!(confirm(new_password).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    for client in [&laptop, &phone] {
        assert_eq!(me(client, app).await.status(), StatusCode::UNAUTHORIZED, "every session ended");
    }
    let log_in = |password: &str| {
        app.api(Method::POST, "/sessions").json(&json!({ "email": "ada@example.com", "password": password }))
    };
    assert_eq!(log_in(PASSWORD).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(log_in(new_password).send().await.unwrap().status(), StatusCode::CREATED);
    let reused = problem(confirm("yet another passphrase 43").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(reused["errors"][0]["field"], "token", "single use");
}

async fn reset_and_verification_failure_paths(app: &TestApp) {
    let malformed = app.api(Method::POST, "/password-resets").json(&json!({ "email": "not-an-address" }));
    let body = problem(malformed.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(body["errors"][0]["field"], "email");
    let unknown_field = app.api(Method::POST, "/password-resets").json(&json!({ "email": "a@example.com", "x": 1 }));
    problem(unknown_field.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let empty = app.api(Method::POST, "/password-resets/confirm").json(&json!({}));
    let body = problem(empty.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["token", "newPassword"]);
    let bogus = app
        .api(Method::POST, "/password-resets/confirm")
        .json(&json!({ "token": "not-a-token-we-issued", "newPassword": "a brand new passphrase 42" }));
    problem(bogus.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let bogus = app.api(Method::POST, "/email-verifications/confirm").json(&json!({ "token": "x".repeat(500) }));
    problem(bogus.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let missing = app.api(Method::POST, "/email-verifications/confirm").json(&json!({}));
    problem(missing.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let not_json = app.api(Method::POST, "/password-resets").body("email=a@example.com");
    problem(not_json.send().await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_sending_requests_are_limited_per_address_mailed_and_per_client() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let request = |email: &str| app.api(Method::POST, "/password-resets").json(&json!({ "email": email }));
    for _ in 0..3 {
        assert_eq!(request("ada@example.com").send().await.unwrap().status(), StatusCode::ACCEPTED);
    }
    let limited = request("ada@example.com").send().await.unwrap();
    assert_eq!(limited.headers()["ratelimit-policy"], "3;w=3600");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Other addresses from the same client, up to the per-client limit of 10 an hour.
    for index in 0..6 {
        let status = request(&format!("user{index}@example.com")).send().await.unwrap().status();
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let limited = request("user7@example.com").send().await.unwrap();
    assert_eq!(limited.headers()["ratelimit-policy"], "10;w=3600");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Token guessing is limited per client like password guessing.
    let guess = || app.api(Method::POST, "/email-verifications/confirm").json(&json!({ "token": "guess" }));
    for _ in 0..10 {
        assert_eq!(guess().send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
    problem(guess().send().await.unwrap(), StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

async fn sign_ins_from_new_devices_of_staff_wait_for_a_mailed_confirmation(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.accounts.login_challenge_roles = vec!["staff".into(), "admin".into()];
    })
    .await;
    app.create_user("sam@example.com", Role::Staff).await;
    app.create_user("cat@example.com", Role::Customer).await;
    let log_in = |client: &reqwest::Client, email: &str, password: &str| {
        client.post(app.url("/api/v1/sessions")).json(&json!({ "email": email, "password": password }))
    };
    let laptop = app.new_client();
    let challenged = log_in(&laptop, "sam@example.com", PASSWORD).send().await.unwrap();
    assert_eq!(challenged.status(), StatusCode::ACCEPTED);
    let cookies: Vec<&str> =
        challenged.headers().get_all("set-cookie").iter().map(|value| value.to_str().unwrap()).collect();
    assert!(cookies.iter().any(|cookie| cookie.starts_with("shopkeep_device=") && cookie.contains("HttpOnly")));
    assert!(!cookies.iter().any(|cookie| cookie.starts_with("shopkeep_session=")), "no session yet: {cookies:?}");
    let body: Value = challenged.json().await.unwrap();
    assert_eq!(body["status"], "confirmationRequired");
    assert_eq!(me(&laptop, &app).await.status(), StatusCode::UNAUTHORIZED);
    // A wrong password is a plain 401: the challenge reveals nothing to a guesser.
    let wrong = log_in(&app.new_client(), "sam@example.com", "a wrong password").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Customers are not challenged.
    assert_eq!(
        log_in(&app.new_client(), "cat@example.com", PASSWORD).send().await.unwrap().status(),
        StatusCode::CREATED
    );

    let outbox = app.outbox_with(1).await;
    let mail = &outbox[0].mail;
    assert_eq!(mail.to, "sam@example.com");
    assert!(mail.subject.contains("new device"), "{}", mail.subject);
    assert!(mail.text.contains("network address 127.0.0.1"), "{}", mail.text);
    let token = token_in(&mail.text);
    let confirm = || app.api(Method::POST, "/login-challenges/confirm").json(&json!({ "token": token }));
    assert_eq!(confirm().send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let reused = problem(confirm().send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(reused["errors"][0]["field"], "token");

    let signed_in = log_in(&laptop, "sam@example.com", PASSWORD).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED, "the confirmed device signs in");
    assert_eq!(me(&laptop, &app).await.status(), StatusCode::OK);
    // Another device is still new.
    let phone = app.new_client();
    assert_eq!(log_in(&phone, "sam@example.com", PASSWORD).send().await.unwrap().status(), StatusCode::ACCEPTED);
    // Challenge mails count against the per-address mail limit (3 an hour): the third new
    // device is mailed, the fourth is refused and nothing more is queued.
    let tablet = app.new_client();
    assert_eq!(log_in(&tablet, "sam@example.com", PASSWORD).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let kiosk = app.new_client();
    let limited = log_in(&kiosk, "sam@example.com", PASSWORD).send().await.unwrap();
    assert_eq!(limited.headers()["ratelimit-policy"], "3;w=3600");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.outbox_with(3).await.len(), 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.outbox().await.len(), 3, "no mail for the refused sign-in");
    let missing = app.api(Method::POST, "/login-challenges/confirm").json(&json!({}));
    problem(missing.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_challenges_on_sqlite() {
    sign_ins_from_new_devices_of_staff_wait_for_a_mailed_confirmation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_challenges_on_postgres() {
    sign_ins_from_new_devices_of_staff_wait_for_a_mailed_confirmation(Backend::Postgres).await;
}
