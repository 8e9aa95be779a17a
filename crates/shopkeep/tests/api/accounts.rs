//! Identity: sign-up, login/logout, the current user, admin user management, API tokens.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{PASSWORD, TestApp, error_fields, problem};

both_backends!(
    sign_up_signs_in,
    sign_up_reports_every_invalid_field,
    sign_up_rejects_duplicate_email_whatever_its_case,
    sign_up_rejects_bad_bodies,
    login_failures_all_look_the_same,
    login_rotates_the_session_and_logout_revokes_it,
    me_requires_a_valid_credential,
    update_me_changes_name_and_password,
    admin_changes_roles_and_disables_users,
    admin_lists_users,
    api_tokens_authenticate_and_can_be_revoked,
    api_token_requests_are_validated,
    cookie_writes_from_foreign_origins_are_refused,
);

async fn sign_up_signs_in(app: &TestApp) {
    let client = app.new_client();
    let response = client
        .post(app.url("/api/v1/users"))
        .json(&json!({ "email": "  Ada@Example.COM ", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("shopkeep_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP development cookie");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["role"], "customer");
    assert_eq!(location, format!("/api/v1/users/{}", body["id"].as_str().unwrap()));
    assert!(body.get("passwordHash").is_none() && body.get("password").is_none());

    let me = client.get(app.url("/api/v1/users/me")).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.headers()["cache-control"], "private, no-store");
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], body["id"]);
}

async fn sign_up_reports_every_invalid_field(app: &TestApp) {
    let response = app.api(Method::POST, "/users").json(&json!({})).send().await.unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["email", "password", "name"]);

    let response = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "not-an-email", "password": "short", "name": "   " }))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["email", "password", "name"]);

    let response = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "ada@example.com", "password": "qwerty123456", "name": "Ada" }))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["password"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("common"));
}

async fn sign_up_rejects_duplicate_email_whatever_its_case(app: &TestApp) {
    let first = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "ADA@example.com", "password": PASSWORD, "name": "Ada 2" }))
        .send()
        .await
        .unwrap();
    let body = problem(second, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("already exists"));
}

async fn sign_up_rejects_bad_bodies(app: &TestApp) {
    let wrong_type = app.api(Method::POST, "/users").body("email=a").header("content-type", "text/plain");
    problem(wrong_type.send().await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let not_json = app.api(Method::POST, "/users").body("{nope").header("content-type", "application/json");
    let body = problem(not_json.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["body"]);

    let server_field = app
        .api(Method::POST, "/users")
        .json(&json!({ "id": "x", "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }));
    let body = problem(server_field.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("unknown field `id`"));

    let wrong_json_type = app.api(Method::POST, "/users").json(&json!({ "email": 5, "password": PASSWORD }));
    let body = problem(wrong_json_type.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["email"]);
}

async fn login_failures_all_look_the_same(app: &TestApp) {
    app.create_user("ada@example.com", Role::Customer).await;
    let disabled = app.create_user("bob@example.com", Role::Customer).await;
    let admin = app.signed_in("root@example.com", Role::Admin).await;
    let response = admin
        .patch(app.url(&format!("/api/v1/users/{}", disabled.id)))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut details = Vec::new();
    for (email, password) in [
        ("ada@example.com", "the wrong password"),
        ("nobody@example.com", PASSWORD),
        ("bob@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        let response = app
            .api(Method::POST, "/sessions")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        details.push((body["type"].clone(), body["detail"].clone()));
    }
    assert!(details.windows(2).all(|pair| pair[0] == pair[1]), "{details:?}");
    assert_eq!(details[0].1, "invalid email or password");

    let missing = app.api(Method::POST, "/sessions").json(&json!({})).send().await.unwrap();
    let body = problem(missing, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["email", "password"]);
}

async fn login_rotates_the_session_and_logout_revokes_it(app: &TestApp) {
    app.create_user("ada@example.com", Role::Customer).await;
    let login = || async {
        let response = app
            .api(Method::POST, "/sessions")
            .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    };
    let first = login().await;
    // Logging in again while presenting the first session replaces it.
    let response = app
        .api(Method::POST, "/sessions")
        .header("cookie", &first)
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let second = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(first, second, "a new session id at login");
    let me = |cookie: String| async move {
        app.api(Method::GET, "/users/me").header("cookie", cookie).send().await.unwrap()
    };
    problem(me(first.clone()).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(me(second.clone()).await.status(), StatusCode::OK);

    let logout = app.api(Method::DELETE, "/sessions/current").header("cookie", &second).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    problem(me(second.clone()).await, StatusCode::UNAUTHORIZED).await;
    let again = app.api(Method::DELETE, "/sessions/current").header("cookie", &second).send().await.unwrap();
    problem(again, StatusCode::UNAUTHORIZED).await;
}

async fn me_requires_a_valid_credential(app: &TestApp) {
    let anonymous = app.api(Method::GET, "/users/me").send().await.unwrap();
    let body = problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert!(body["detail"].as_str().unwrap().contains("sign in"));
    let forged = app.api(Method::GET, "/users/me").header("cookie", "shopkeep_session=forged").send().await.unwrap();
    problem(forged, StatusCode::UNAUTHORIZED).await;
    let bad_bearer = app.api(Method::GET, "/users/me").bearer_auth("skp_forged").send().await.unwrap();
    let body = problem(bad_bearer, StatusCode::UNAUTHORIZED).await;
    assert!(body["detail"].as_str().unwrap().contains("bearer token"));
}

async fn update_me_changes_name_and_password(app: &TestApp) {
    let client = app.signed_in("ada@example.com", Role::Customer).await;
    let other_device = app.new_client();
    let login = other_device
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);

    let renamed = client.patch(app.url("/api/v1/users/me")).json(&json!({ "name": "Ada L." })).send().await.unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "Ada L.");

    let without_current =
        client.patch(app.url("/api/v1/users/me")).json(&json!({ "newPassword": "a brand new passphrase" })).send();
    let body = problem(without_current.await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["currentPassword"]);
    let wrong_current = client
        .patch(app.url("/api/v1/users/me"))
        .json(&json!({ "currentPassword": "not my password", "newPassword": "a brand new passphrase" }))
        .send();
    let body = problem(wrong_current.await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["currentPassword"]);

    let changed = client
        .patch(app.url("/api/v1/users/me"))
        .json(&json!({ "currentPassword": PASSWORD, "newPassword": "a brand new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(client.get(app.url("/api/v1/users/me")).send().await.unwrap().status(), StatusCode::OK);
    let other = other_device.get(app.url("/api/v1/users/me")).send().await.unwrap();
    problem(other, StatusCode::UNAUTHORIZED).await;
    let new_login = app
        .api(Method::POST, "/sessions")
        .json(&json!({ "email": "ada@example.com", "password": "a brand new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(new_login.status(), StatusCode::CREATED);
}

async fn admin_changes_roles_and_disables_users(app: &TestApp) {
    let admin = app.signed_in("root@example.com", Role::Admin).await;
    let customer = app.signed_in("ada@example.com", Role::Customer).await;
    let me: Value = customer.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    let ada_url = app.url(&format!("/api/v1/users/{}", me["id"].as_str().unwrap()));

    let forbidden = customer.patch(&ada_url).json(&json!({ "role": "admin" })).send().await.unwrap();
    problem(forbidden, StatusCode::FORBIDDEN).await;
    let anonymous = app.http.patch(&ada_url).json(&json!({ "role": "admin" })).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;

    let promoted = admin.patch(&ada_url).json(&json!({ "role": "staff" })).send().await.unwrap();
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(promoted.json::<Value>().await.unwrap()["role"], "staff");
    let seen: Value = customer.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["role"], "staff", "the role applies to existing sessions");
    let fetched: Value = admin.get(&ada_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched["role"], "staff");

    let invalid = admin.patch(&ada_url).json(&json!({ "role": "root" })).send().await.unwrap();
    let body = problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["role"]);
    let empty = admin.patch(&ada_url).json(&json!({})).send().await.unwrap();
    problem(empty, StatusCode::BAD_REQUEST).await;
    let unknown = admin
        .patch(app.url(&format!("/api/v1/users/{}", uuid::Uuid::now_v7())))
        .json(&json!({ "role": "staff" }))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
    let not_an_id = admin.get(app.url("/api/v1/users/not-an-id")).send().await.unwrap();
    problem(not_an_id, StatusCode::NOT_FOUND).await;

    let root: Value = admin.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    let self_demotion = admin
        .patch(app.url(&format!("/api/v1/users/{}", root["id"].as_str().unwrap())))
        .json(&json!({ "role": "customer" }))
        .send()
        .await
        .unwrap();
    problem(self_demotion, StatusCode::CONFLICT).await;

    let disabled = admin.patch(&ada_url).json(&json!({ "disabled": true })).send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    problem(customer.get(app.url("/api/v1/users/me")).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let login = app
        .api(Method::POST, "/sessions")
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    problem(login, StatusCode::UNAUTHORIZED).await;
}

async fn admin_lists_users(app: &TestApp) {
    let admin = app.signed_in("root@example.com", Role::Admin).await;
    for index in 0..3 {
        app.create_user(&format!("customer{index}@example.com"), Role::Customer).await;
    }
    app.create_user("clerk@shop.example", Role::Staff).await;

    let all: Value = admin.get(app.url("/api/v1/users?limit=2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["total"], 5);
    assert_eq!(all["limit"], 2);
    assert_eq!(all["page"], 1);
    assert_eq!(all["totalPages"], 3);
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let staff: Value = admin.get(app.url("/api/v1/users?role=staff")).send().await.unwrap().json().await.unwrap();
    assert_eq!(staff["total"], 1);
    assert_eq!(staff["data"][0]["email"], "clerk@shop.example");
    let by_email: Value =
        admin.get(app.url("/api/v1/users?email=customer1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_email["total"], 1);
    let by_email: Value = admin
        .get(app.url("/api/v1/users?sortBy=email&sortOrder=asc&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_email["data"][0]["email"], "clerk@shop.example");
    let empty: Value = admin.get(app.url("/api/v1/users?page=9")).send().await.unwrap().json().await.unwrap();
    assert_eq!(empty["data"], json!([]));

    let invalid =
        admin.get(app.url("/api/v1/users?limit=500&role=king&sortOrder=up&sortBy=password")).send().await.unwrap();
    let body = problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["limit", "sortBy", "sortOrder", "role"]);
    let unknown_parameter = admin.get(app.url("/api/v1/users?password=x")).send().await.unwrap();
    problem(unknown_parameter, StatusCode::BAD_REQUEST).await;

    let customer = app.signed_in("ada@example.com", Role::Customer).await;
    problem(customer.get(app.url("/api/v1/users")).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    problem(app.api(Method::GET, "/users").send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
}

async fn api_tokens_authenticate_and_can_be_revoked(app: &TestApp) {
    let client = app.signed_in("ada@example.com", Role::Staff).await;
    let created = client
        .post(app.url("/api/v1/api-tokens"))
        .json(&json!({ "name": "ci deploys", "expiresInDays": 30 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["cache-control"], "private, no-store");
    let created: Value = created.json().await.unwrap();
    let secret = created["tokenSecret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("skp_") && secret.len() > 40);
    assert!(created["expiresAt"].is_string());

    let listed: Value = client.get(app.url("/api/v1/api-tokens")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&secret), "the secret is shown once only");

    let me = app.api(Method::GET, "/users/me").bearer_auth(&secret).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    // A bearer token carries the user's role: staff may create categories.
    let category = app.api(Method::POST, "/categories").bearer_auth(&secret).json(&json!({ "name": "Books" }));
    assert_eq!(category.send().await.unwrap().status(), StatusCode::CREATED);
    let logout = app.api(Method::DELETE, "/sessions/current").bearer_auth(&secret).send().await.unwrap();
    problem(logout, StatusCode::BAD_REQUEST).await;

    let intruder = app.signed_in("eve@example.com", Role::Customer).await;
    let token_url = app.url(&format!("/api/v1/api-tokens/{}", created["id"].as_str().unwrap()));
    problem(intruder.delete(&token_url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(client.delete(&token_url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    problem(client.delete(&token_url).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let revoked = app.api(Method::GET, "/users/me").bearer_auth(&secret).send().await.unwrap();
    problem(revoked, StatusCode::UNAUTHORIZED).await;
}

async fn api_token_requests_are_validated(app: &TestApp) {
    let client = app.signed_in("ada@example.com", Role::Customer).await;
    let invalid = client
        .post(app.url("/api/v1/api-tokens"))
        .json(&json!({ "name": "", "expiresInDays": 0 }))
        .send()
        .await
        .unwrap();
    let body = problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["name", "expiresInDays"]);
    let anonymous = app.api(Method::POST, "/api-tokens").json(&json!({ "name": "x" })).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    for index in 0..20 {
        let response =
            client.post(app.url("/api/v1/api-tokens")).json(&json!({ "name": format!("t{index}") })).send().await;
        assert_eq!(response.unwrap().status(), StatusCode::CREATED);
    }
    let too_many = client.post(app.url("/api/v1/api-tokens")).json(&json!({ "name": "one more" })).send();
    problem(too_many.await.unwrap(), StatusCode::CONFLICT).await;
}

async fn cookie_writes_from_foreign_origins_are_refused(app: &TestApp) {
    let client = app.signed_in("ada@example.com", Role::Customer).await;
    let foreign = client
        .patch(app.url("/api/v1/users/me"))
        .header("origin", "https://evil.example")
        .json(&json!({ "name": "Mallory" }))
        .send()
        .await
        .unwrap();
    let body = problem(foreign, StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("Origin"));
    let same_origin = client
        .patch(app.url("/api/v1/users/me"))
        .header("origin", format!("http://{}", app.address))
        .json(&json!({ "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), StatusCode::OK);
    let cross_site_fetch = client
        .patch(app.url("/api/v1/users/me"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "name": "Mallory" }))
        .send()
        .await
        .unwrap();
    problem(cross_site_fetch, StatusCode::FORBIDDEN).await;
    // Reads are not state-changing and stay allowed.
    let read = client.get(app.url("/api/v1/users/me")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
}
