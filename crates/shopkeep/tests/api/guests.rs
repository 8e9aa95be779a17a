//! Guest accounts: created signed in, upgraded in place to a full account, failure paths.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{PASSWORD, TestApp, problem};

both_backends!(a_guest_becomes_a_full_account_in_place, guest_failure_paths);

fn session_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|cookie| cookie.starts_with("shopkeep_session="))
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

async fn a_guest_becomes_a_full_account_in_place(app: &TestApp) {
    let browser = app.new_client();
    let created = browser.post(app.url("/api/v1/guests")).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let guest_cookie = session_cookie(&created);
    let guest: Value = created.json().await.unwrap();
    assert_eq!(guest["guest"], true);
    assert!(guest["email"].is_null());
    assert_eq!(guest["role"], "customer");
    let me: Value = browser.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], guest["id"]);

    let upgrade = |body: Value| browser.post(app.url("/api/v1/users/me/upgrade")).json(&body);
    let weak = upgrade(json!({ "email": "gus@example.com", "password": "short", "name": "Gus" }));
    let weak = problem(weak.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(weak["errors"][0]["field"], "password");
    app.create_user("taken@example.com", Role::Customer).await;
    let taken = upgrade(json!({ "email": "taken@example.com", "password": PASSWORD, "name": "Gus" }));
    problem(taken.send().await.unwrap(), StatusCode::CONFLICT).await;

    let upgraded = upgrade(json!({ "email": "gus@example.com", "password": PASSWORD, "name": "Gus" }));
    let upgraded = upgraded.send().await.unwrap();
    assert_eq!(upgraded.status(), StatusCode::OK);
    let full: Value = upgraded.json().await.unwrap();
    assert_eq!(full["id"], guest["id"], "the same account, so what it owns stays");
    assert_eq!(full["guest"], false);
    assert_eq!(full["email"], "gus@example.com");
    assert_eq!(full["emailVerified"], false);
    // The guest's session was replaced by a new one.
    let old = app.http.get(app.url("/api/v1/users/me")).header("cookie", &guest_cookie).send().await.unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let me: Value = browser.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "gus@example.com");
    // A verification mail is on its way, and the account signs in with its new password.
    let outbox = app.outbox_with(1).await;
    assert_eq!(outbox[0].mail.to, "gus@example.com");
    let login = app.api(Method::POST, "/sessions").json(&json!({ "email": "gus@example.com", "password": PASSWORD }));
    assert_eq!(login.send().await.unwrap().status(), StatusCode::CREATED);
    let again = upgrade(json!({ "email": "gus2@example.com", "password": PASSWORD, "name": "Gus" }));
    let again = problem(again.send().await.unwrap(), StatusCode::CONFLICT).await;
    assert!(again["detail"].as_str().unwrap().contains("already a full account"));
}

async fn guest_failure_paths(app: &TestApp) {
    let anonymous = app.api(Method::POST, "/users/me/upgrade").json(&json!({ "email": "a@example.com" }));
    problem(anonymous.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let customer = app.signed_in("cat@example.com", Role::Customer).await;
    let not_a_guest = customer
        .post(app.url("/api/v1/users/me/upgrade"))
        .json(&json!({ "email": "cat2@example.com", "password": PASSWORD, "name": "Cat" }))
        .send()
        .await
        .unwrap();
    problem(not_a_guest, StatusCode::CONFLICT).await;
    // A guest has no password: its placeholder address never signs in.
    let guest: Value = app.api(Method::POST, "/guests").send().await.unwrap().json().await.unwrap();
    let id = guest["id"].as_str().unwrap().replace('-', "");
    let login = app
        .api(Method::POST, "/sessions")
        .json(&json!({ "email": format!("guest-{id}@guest.invalid"), "password": "!guest" }));
    problem(login.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let unknown_field =
        app.new_client().post(app.url("/api/v1/guests")).json(&json!({ "anything": 1 })).send().await.unwrap();
    assert_eq!(unknown_field.status(), StatusCode::CREATED, "a body is ignored: guests have nothing to give");
}
