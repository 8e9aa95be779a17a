//! Mail end to end through a real SMTP server (aiosmtpd, started by the test): a state change
//! queues a `mail.send` job, the in-process worker sends it, the server receives it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::helpers::{Backend, PASSWORD, spawn_app_with};
use crate::smtp_support::SmtpSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_owner_gets_a_real_mail_and_the_smtp_breaker_is_on_the_status_page() {
    let sink = SmtpSink::start();
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.mail.smtp_url = Some(shopkeep::config::Secret::new(sink.url()));
        config.mail.from = "Corner Shop <shop@corner.example>".into();
        config.mail.shop_name = "Corner Shop".into();
    })
    .await;
    app.create_user("ada@example.com", Role::Customer).await;
    for _ in 0..5 {
        let response = app
            .http
            .post(app.url("/api/v1/sessions"))
            .json(&json!({ "email": "ada@example.com", "password": "a wrong password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let mut messages = Vec::new();
    for _ in 0..200 {
        messages = sink.messages();
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages.len(), 1, "one mail for one lock");
    let mail = &messages[0];
    assert_eq!(mail.header("To").as_deref(), Some("ada@example.com"));
    assert_eq!(mail.header("From").as_deref(), Some("\"Corner Shop\" <shop@corner.example>"));
    let subject = mail.header("Subject").unwrap();
    assert!(subject.starts_with("Corner Shop: your account was locked"), "{subject}");
    let parts = mail.parts();
    assert!(
        parts
            .iter()
            .any(|part| part.content_type.starts_with("text/plain") && part.content.contains("Hello Test User"))
    );
    assert!(parts.iter().any(|part| part.content_type.starts_with("text/html") && part.content.contains("<strong>")));
    // The Message-ID is the job's id: the job that sent it says so. The sink has the mail as soon
    // as the server accepted it; the worker acknowledges the job just after.
    let mut jobs = Value::Null;
    for _ in 0..200 {
        jobs = app.http.get(app.admin_url("/admin/v1/jobs?kind=mail.send")).send().await.unwrap().json().await.unwrap();
        if jobs["data"][0]["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job_id = jobs["data"][0]["id"].as_str().unwrap();
    assert_eq!(mail.header("Message-ID"), Some(format!("<{job_id}@corner.example>")));
    assert_eq!(jobs["data"][0]["state"], "succeeded");
    assert!(app.outbox().await.is_empty(), "delivered, so nothing kept in the outbox");

    let status: Value = app.http.get(app.admin_url("/admin/v1/status")).send().await.unwrap().json().await.unwrap();
    let breakers: Vec<&str> =
        status["breakers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(breakers, ["smtp"]);
    // Ada can still sign in once the lock is over.
    app.limiter_clock.advance(Duration::from_secs(900));
    let login = app
        .http
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_password_reset_links_arrive_over_smtp_and_work() {
    let sink = SmtpSink::start();
    let app = spawn_app_with(Backend::Postgres, |config| {
        config.mail.smtp_url = Some(shopkeep::config::Secret::new(sink.url()));
        config.accounts.link_base_url = "https://corner.example".into();
    })
    .await;
    let wait_for = |count: usize| {
        let sink = &sink;
        async move {
            for _ in 0..200 {
                let messages = sink.messages();
                if messages.len() >= count {
                    return messages;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{count} message(s) never arrived");
        }
    };
    let text_of = |mail: &crate::smtp_support::Eml| {
        mail.parts().into_iter().find(|part| part.content_type.starts_with("text/plain")).unwrap().content
    };
    let token_of = |text: &str, page: &str| {
        let prefix = format!("https://corner.example/{page}?token=");
        let start = text.find(&prefix).unwrap_or_else(|| panic!("no {page} link in {text}")) + prefix.len();
        text[start..].split_whitespace().next().unwrap().to_owned()
    };
    let signed_up = app
        .http
        .post(app.url("/api/v1/users"))
        .json(&json!({ "email": "bob@example.com", "password": PASSWORD, "name": "Bob" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), StatusCode::CREATED);
    let verification = &wait_for(1).await[0];
    assert_eq!(verification.header("To").as_deref(), Some("bob@example.com"));
    let token = token_of(&text_of(verification), "verify-email");
    let confirmed =
        app.http.post(app.url("/api/v1/email-verifications/confirm")).json(&json!({ "token": token })).send().await;
    assert_eq!(confirmed.unwrap().status(), StatusCode::NO_CONTENT);

    let requested =
        app.http.post(app.url("/api/v1/password-resets")).json(&json!({ "email": "bob@example.com" })).send().await;
    assert_eq!(requested.unwrap().status(), StatusCode::ACCEPTED);
    let reset = &wait_for(2).await[1];
    assert!(reset.header("Subject").unwrap().contains("reset your password"));
    let token = token_of(&text_of(reset), "reset-password");
    let changed = app
        .http
        .post(app.url("/api/v1/password-resets/confirm"))
        .json(&json!({ "token": token, "newPassword": "a brand new passphrase 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let login = app
        .http
        .post(app.url("/api/v1/sessions"))
        .json(&json!({ "email": "bob@example.com", "password": "a brand new passphrase 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    assert!(app.outbox().await.is_empty(), "delivered, not kept");
    app.stop().await;
}
