//! Contract cases for users, sessions and API tokens, and guest accounts: upgrade in place and
//! the purge of idle guests.

use shop::accounts::{
    Email, NewApiTokenRecord, NewSession, NewUser, PersonName, Role, TokenPurpose, User, UserChanges, UserQuery,
    UserSort,
};
use shop::jobs::JobQuery;
use shop::secrets::SecretToken;
use shop::{Conflict, PageRequest, StoreError};
use uuid::Uuid;

use crate::{SharedStore, at, new_account_token, new_job};

pub fn new_user(email: &str, role: Role, seconds: i64) -> NewUser {
    NewUser {
        id: shop::new_id(),
        email: Email::parse(email).unwrap(),
        name: PersonName::parse("Ada Lovelace").unwrap(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        guest: false,
        created_at: at(seconds),
    }
}

/// A guest created at `at(seconds)`: a unique placeholder address under `.invalid` and a
/// password hash that never verifies.
pub fn new_guest(seconds: i64) -> NewUser {
    let id = shop::new_id();
    NewUser {
        id,
        email: Email::parse(&format!("guest-{}@guest.invalid", id.simple())).unwrap(),
        name: PersonName::parse("Guest").unwrap(),
        role: Role::Customer,
        password_hash: "!".into(),
        guest: true,
        created_at: at(seconds),
    }
}

pub async fn users_round_trip(store: SharedStore) {
    let new = new_user("ada@example.com", Role::Customer, 0);
    let user = store.insert_user(&new, &[]).await.unwrap();
    assert_eq!(user.id, new.id);
    assert_eq!(user.email.as_str(), "ada@example.com");
    assert_eq!(user.role, Role::Customer);
    assert!(!user.disabled);
    assert!(!user.guest);
    assert_eq!(user.created_at, at(0));
    assert_eq!(user.updated_at, at(0));
    assert_eq!(store.find_user(new.id).await.unwrap(), Some(user.clone()));
    let with_password = store.find_user_by_email(&new.email).await.unwrap().unwrap();
    assert_eq!(with_password.user, user);
    assert_eq!(with_password.password_hash, new.password_hash);
    assert!(store.find_user(Uuid::now_v7()).await.unwrap().is_none());
    assert!(store.find_user_by_email(&Email::parse("nobody@example.com").unwrap()).await.unwrap().is_none());
}

pub async fn duplicate_email_is_a_conflict(store: SharedStore) {
    store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let error = store.insert_user(&new_user("ada@example.com", Role::Staff, 1), &[]).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::EmailTaken)), "unexpected {error:?}");
}

pub async fn update_user_changes_only_given_fields(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let changes = UserChanges { role: Some(Role::Staff), ..UserChanges::default() };
    let updated = store.update_user(user.id, &changes, at(60)).await.unwrap();
    assert_eq!(updated.role, Role::Staff);
    assert_eq!(updated.name, user.name);
    assert!(!updated.disabled);
    assert_eq!(updated.created_at, at(0));
    assert_eq!(updated.updated_at, at(60));
    let changes = UserChanges {
        name: Some(PersonName::parse("Grace").unwrap()),
        disabled: Some(true),
        password_hash: Some("new-hash".into()),
        ..UserChanges::default()
    };
    let updated = store.update_user(user.id, &changes, at(120)).await.unwrap();
    assert_eq!(updated.name.as_str(), "Grace");
    assert!(updated.disabled);
    assert_eq!(updated.role, Role::Staff);
    let stored = store.find_user_with_password(user.id).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "new-hash");
}

pub async fn update_missing_user_is_not_found(store: SharedStore) {
    let error = store.update_user(Uuid::now_v7(), &UserChanges::default(), at(0)).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
}

pub async fn list_users_filters_and_pages(store: SharedStore) {
    for (index, (email, role)) in [
        ("a@example.com", Role::Customer),
        ("b@example.com", Role::Staff),
        ("c@shop.example", Role::Customer),
        ("d@example.com", Role::Admin),
    ]
    .into_iter()
    .enumerate()
    {
        store.insert_user(&new_user(email, role, index as i64), &[]).await.unwrap();
    }
    let all = store.list_users(&UserQuery::default()).await.unwrap();
    assert_eq!(all.total, 4);
    let emails: Vec<&str> = all.items.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["d@example.com", "c@shop.example", "b@example.com", "a@example.com"], "newest first");
    let customers = store.list_users(&UserQuery { role: Some(Role::Customer), ..UserQuery::default() }).await.unwrap();
    assert_eq!(customers.total, 2);
    let shop_domain =
        store.list_users(&UserQuery { email_contains: Some("SHOP.".into()), ..UserQuery::default() }).await.unwrap();
    assert_eq!(shop_domain.items.len(), 1);
    assert_eq!(shop_domain.items[0].email.as_str(), "c@shop.example");
    let by_email = UserQuery { sort_by: UserSort::Email, sort_order: shop::SortOrder::Asc, ..UserQuery::default() };
    let sorted = store.list_users(&by_email).await.unwrap();
    let emails: Vec<&str> = sorted.items.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["a@example.com", "b@example.com", "c@shop.example", "d@example.com"]);
    let second_page = store
        .list_users(&UserQuery { page: PageRequest::new(Some(2), Some(3)).unwrap(), ..UserQuery::default() })
        .await
        .unwrap();
    assert_eq!(second_page.total, 4);
    assert_eq!(second_page.items.len(), 1);
    assert_eq!(second_page.items[0].email.as_str(), "a@example.com");
}

fn new_session(user_id: Uuid, token: &SecretToken, seconds: i64) -> NewSession {
    NewSession {
        id: shop::new_id(),
        token_hash: token.hash(),
        user_id,
        created_at: at(seconds),
        expires_at: at(seconds + 3_600),
    }
}

pub async fn sessions_lifecycle(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let token = SecretToken::generate("");
    let new = new_session(user.id, &token, 10);
    store.insert_session(&new).await.unwrap();
    let (session, session_user) = store.find_session(&token.hash()).await.unwrap().unwrap();
    assert_eq!(session.id, new.id);
    assert_eq!(session.user_id, user.id);
    assert_eq!(session.created_at, at(10));
    assert_eq!(session.last_seen_at, at(10));
    assert_eq!(session.expires_at, at(3_610));
    assert_eq!(session_user, user);
    store.touch_session(session.id, at(100)).await.unwrap();
    let (touched, _) = store.find_session(&token.hash()).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, at(100));
    assert!(store.find_session(&SecretToken::generate("").hash()).await.unwrap().is_none());
    store.delete_session(session.id).await.unwrap();
    assert!(store.find_session(&token.hash()).await.unwrap().is_none());
}

pub async fn delete_user_sessions_keeps_the_current_one(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let other = store.insert_user(&new_user("bob@example.com", Role::Customer, 0), &[]).await.unwrap();
    let tokens: Vec<SecretToken> = (0..3).map(|_| SecretToken::generate("")).collect();
    let mut ids = Vec::new();
    for token in &tokens {
        let session = new_session(user.id, token, 0);
        ids.push(session.id);
        store.insert_session(&session).await.unwrap();
    }
    let other_token = SecretToken::generate("");
    store.insert_session(&new_session(other.id, &other_token, 0)).await.unwrap();
    assert_eq!(store.delete_user_sessions(user.id, Some(ids[0])).await.unwrap(), 2);
    assert!(store.find_session(&tokens[0].hash()).await.unwrap().is_some());
    assert!(store.find_session(&tokens[1].hash()).await.unwrap().is_none());
    assert!(store.find_session(&other_token.hash()).await.unwrap().is_some(), "other users keep theirs");
    assert_eq!(store.delete_user_sessions(user.id, None).await.unwrap(), 1);
    assert!(store.find_session(&tokens[0].hash()).await.unwrap().is_none());
}

pub async fn operators_list_and_end_a_users_sessions(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let other = store.insert_user(&new_user("bob@example.com", Role::Customer, 0), &[]).await.unwrap();
    let tokens: Vec<SecretToken> = (0..3).map(|_| SecretToken::generate("")).collect();
    for (seconds, token) in tokens.iter().enumerate() {
        store.insert_session(&new_session(user.id, token, seconds as i64)).await.unwrap();
    }
    let other_token = SecretToken::generate("");
    store.insert_session(&new_session(other.id, &other_token, 0)).await.unwrap();
    let (newest, _) = store.find_session(&tokens[2].hash()).await.unwrap().unwrap();
    store.touch_session(newest.id, crate::at(100)).await.unwrap();

    let listed = store.list_user_sessions(user.id, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!((listed[0].id, listed[0].last_seen_at), (newest.id, crate::at(100)), "most recently seen first");
    assert!(listed.iter().all(|session| session.user_id == user.id));
    assert_eq!(store.list_user_sessions(user.id, 2).await.unwrap().len(), 2, "bounded");

    assert_eq!(store.end_user_sessions(user.id, &crate::operator_audit(200)).await.unwrap(), 3);
    assert!(store.list_user_sessions(user.id, 10).await.unwrap().is_empty());
    assert!(store.find_session(&other_token.hash()).await.unwrap().is_some(), "other users keep theirs");
    assert_eq!(store.end_user_sessions(user.id, &crate::operator_audit(201)).await.unwrap(), 0);
    let query = shop::audit::AuditQuery { target: Some(format!("user:{}", user.id)), ..Default::default() };
    let audited = store.list_audit(&query).await.unwrap();
    assert_eq!(audited.total, 2);
    assert_eq!(audited.items[1].action, "sessions.end");
    assert_eq!(audited.items[1].before.as_ref().unwrap()["sessions"], 3);
}

pub async fn expired_sessions_are_purged(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let expired = SecretToken::generate("");
    let idle = SecretToken::generate("");
    let fresh = SecretToken::generate("");
    store.insert_session(&new_session(user.id, &expired, -7_200)).await.unwrap();
    store.insert_session(&new_session(user.id, &idle, -1_000)).await.unwrap();
    store.insert_session(&new_session(user.id, &fresh, 0)).await.unwrap();
    assert_eq!(store.delete_expired_sessions(at(0), at(-500), 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.delete_expired_sessions(at(0), at(-500), 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.delete_expired_sessions(at(0), at(-500), 10).await.unwrap(), 0);
    assert!(store.find_session(&fresh.hash()).await.unwrap().is_some());
    assert!(store.find_session(&idle.hash()).await.unwrap().is_none());
}

pub fn new_token(user_id: Uuid, secret: &SecretToken, seconds: i64) -> NewApiTokenRecord {
    NewApiTokenRecord {
        id: shop::new_id(),
        user_id,
        name: format!("token {seconds}"),
        token_hash: secret.hash(),
        created_at: at(seconds),
        expires_at: Some(at(seconds + 86_400)),
    }
}

pub async fn api_tokens_lifecycle(store: SharedStore) {
    let user = store.insert_user(&new_user("ada@example.com", Role::Staff, 0), &[]).await.unwrap();
    let secret = SecretToken::generate("skp_");
    let record = new_token(user.id, &secret, 5);
    let token = store.insert_api_token(&record).await.unwrap();
    assert_eq!(token.id, record.id);
    assert_eq!(token.name, "token 5");
    assert_eq!(token.expires_at, Some(at(86_405)));
    assert_eq!(token.last_used_at, None);
    let (found, owner) = store.find_api_token(&secret.hash()).await.unwrap().unwrap();
    assert_eq!(found, token);
    assert_eq!(owner, user);
    store.touch_api_token(token.id, at(50)).await.unwrap();
    let (touched, _) = store.find_api_token(&secret.hash()).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(at(50)));
    store.insert_api_token(&new_token(user.id, &SecretToken::generate("skp_"), 6)).await.unwrap();
    let listed = store.list_api_tokens(user.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].name, "token 6", "newest first");
    store.delete_api_token(user.id, token.id).await.unwrap();
    assert!(store.find_api_token(&secret.hash()).await.unwrap().is_none());
}

pub async fn api_tokens_of_other_users_are_not_found(store: SharedStore) {
    let owner = store.insert_user(&new_user("ada@example.com", Role::Staff, 0), &[]).await.unwrap();
    let intruder = store.insert_user(&new_user("eve@example.com", Role::Staff, 0), &[]).await.unwrap();
    let secret = SecretToken::generate("skp_");
    let token = store.insert_api_token(&new_token(owner.id, &secret, 0)).await.unwrap();
    let error = store.delete_api_token(intruder.id, token.id).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "unexpected {error:?}");
    assert!(store.find_api_token(&secret.hash()).await.unwrap().is_some());
    assert!(store.list_api_tokens(intruder.id).await.unwrap().is_empty());
}

/// Stores a session for `user_id` created at `at(seconds)`; returns its secret.
async fn sign_in(store: &SharedStore, user_id: Uuid, seconds: i64) -> SecretToken {
    let secret = SecretToken::generate("");
    store.insert_session(&new_session(user_id, &secret, seconds)).await.unwrap();
    secret
}

fn new_password_hash() -> String {
    "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdHM$bmV3aGFzaA".into()
}

pub async fn guests_round_trip(store: SharedStore) {
    let new = new_guest(0);
    let guest = store.insert_user(&new, &[]).await.unwrap();
    assert!(guest.guest);
    assert_eq!(guest.id, new.id);
    assert_eq!(guest.email, new.email);
    let full = store.insert_user(&new_user("ada@example.com", Role::Customer, 1), &[]).await.unwrap();
    assert!(!full.guest);
    assert_eq!(store.find_user(guest.id).await.unwrap(), Some(guest.clone()));
    assert_eq!(store.find_user_by_email(&new.email).await.unwrap().unwrap().user, guest);
    let with_password = store.find_user_with_password(guest.id).await.unwrap().unwrap();
    assert_eq!(with_password.user, guest);
    assert_eq!(with_password.password_hash, new.password_hash);
    let session = sign_in(&store, guest.id, 5).await;
    assert_eq!(store.find_session(&session.hash()).await.unwrap().unwrap().1, guest);
    let listed = store.list_users(&UserQuery::default()).await.unwrap();
    assert_eq!(listed.items, [full, guest], "guests are listed too, newest first");
}

pub async fn upgrading_a_guest_keeps_its_id_and_sessions(store: SharedStore) {
    let new = new_guest(0);
    let guest = store.insert_user(&new, &[]).await.unwrap();
    let session = sign_in(&store, guest.id, 10).await;
    let welcome = new_job("mail.welcome", 60).queue("mail");
    let email = Email::parse("ada@example.com").unwrap();
    let name = PersonName::parse("Ada Lovelace").unwrap();
    let upgraded = store
        .upgrade_guest(guest.id, &email, &name, &new_password_hash(), at(60), std::slice::from_ref(&welcome))
        .await
        .unwrap();
    assert_eq!(upgraded.id, guest.id);
    assert_eq!(upgraded.email, email);
    assert_eq!(upgraded.name, name);
    assert!(!upgraded.guest);
    assert_eq!(upgraded.role, Role::Customer);
    assert_eq!(upgraded.email_verified_at, None);
    assert_eq!(upgraded.created_at, at(0));
    assert_eq!(upgraded.updated_at, at(60));
    assert_eq!(store.find_user(guest.id).await.unwrap(), Some(upgraded.clone()));
    let with_password = store.find_user_by_email(&email).await.unwrap().unwrap();
    assert_eq!(with_password.user, upgraded);
    assert_eq!(with_password.password_hash, new_password_hash());
    assert!(store.find_user_by_email(&new.email).await.unwrap().is_none(), "the placeholder is gone");
    assert_eq!(store.find_session(&session.hash()).await.unwrap().unwrap().1, upgraded, "still signed in");
    assert_eq!(store.find_job(welcome.id).await.unwrap().unwrap().payload, welcome.payload);
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 1);
    let again = new_job("mail.welcome", 70).queue("mail");
    let error = store
        .upgrade_guest(guest.id, &email, &name, &new_password_hash(), at(70), std::slice::from_ref(&again))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound), "an upgraded account is no guest: {error:?}");
    assert!(store.find_job(again.id).await.unwrap().is_none());
}

async fn assert_upgrade_refused(store: &SharedStore, id: Uuid, email: &str, expected: Option<Conflict>) {
    let orphan = new_job("mail.welcome", 60).queue("mail");
    let jobs_before = store.list_jobs(&JobQuery::default()).await.unwrap().total;
    let error = store
        .upgrade_guest(
            id,
            &Email::parse(email).unwrap(),
            &PersonName::parse("Grace Hopper").unwrap(),
            &new_password_hash(),
            at(60),
            std::slice::from_ref(&orphan),
        )
        .await
        .unwrap_err();
    let matched = match &error {
        StoreError::NotFound => expected.is_none(),
        StoreError::Conflict(conflict) => expected.as_ref() == Some(conflict),
        _ => false,
    };
    assert!(matched, "expected {expected:?} (none: not found), got {error:?}");
    assert!(store.find_job(orphan.id).await.unwrap().is_none(), "the failed upgrade left no job behind");
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, jobs_before);
}

pub async fn upgrading_a_full_account_is_not_found(store: SharedStore) {
    let full = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    assert_upgrade_refused(&store, full.id, "grace@example.com", None).await;
    let stored = store.find_user_with_password(full.id).await.unwrap().unwrap();
    assert_eq!(stored.user, full, "unchanged");
    assert_eq!(stored.password_hash, new_user("ada@example.com", Role::Customer, 0).password_hash);
}

pub async fn upgrading_an_unknown_id_is_not_found(store: SharedStore) {
    store.insert_user(&new_guest(0), &[]).await.unwrap();
    assert_upgrade_refused(&store, Uuid::now_v7(), "grace@example.com", None).await;
    assert!(store.find_user_by_email(&Email::parse("grace@example.com").unwrap()).await.unwrap().is_none());
}

pub async fn upgrading_a_guest_to_a_taken_address_is_a_conflict(store: SharedStore) {
    let ada = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();
    let new = new_guest(1);
    let guest = store.insert_user(&new, &[]).await.unwrap();
    assert_upgrade_refused(&store, guest.id, "ada@example.com", Some(Conflict::EmailTaken)).await;
    let stored = store.find_user_with_password(guest.id).await.unwrap().unwrap();
    assert_eq!(stored.user, guest, "the guest is unchanged");
    assert_eq!(stored.password_hash, new.password_hash);
    assert_eq!(store.find_user(ada.id).await.unwrap(), Some(ada));
}

pub async fn idle_guests_are_deleted_by_cutoff_and_limit(store: SharedStore) {
    let mut idle: Vec<User> = Vec::new();
    for seconds in 0..3 {
        idle.push(store.insert_user(&new_guest(seconds), &[]).await.unwrap());
    }
    // Data of a deleted guest goes with it.
    let verification = SecretToken::generate("");
    let token = new_account_token(idle[0].id, TokenPurpose::EmailVerification, &verification, 0);
    store.replace_account_token(&token).await.unwrap();
    let api_secret = SecretToken::generate("skp_");
    store.insert_api_token(&new_token(idle[0].id, &api_secret, 0)).await.unwrap();
    let signed_in = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let session = sign_in(&store, signed_in.id, 60).await;
    // A guest whose session went unused since the cutoff is idle: it goes, session and all.
    let stale = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let stale_session = sign_in(&store, stale.id, 10).await;
    let young = store.insert_user(&new_guest(100), &[]).await.unwrap();
    let cutoff_exactly = store.insert_user(&new_guest(50), &[]).await.unwrap();
    let full = store.insert_user(&new_user("ada@example.com", Role::Customer, 0), &[]).await.unwrap();

    assert_eq!(store.delete_idle_guests(at(50), 2).await.unwrap(), 2, "at most the limit");
    assert_eq!(store.delete_idle_guests(at(50), 10).await.unwrap(), 2, "then the rest");
    assert_eq!(store.delete_idle_guests(at(50), 10).await.unwrap(), 0);
    for guest in idle.iter().chain([&stale]) {
        assert!(store.find_user(guest.id).await.unwrap().is_none());
    }
    assert!(store.find_session(&stale_session.hash()).await.unwrap().is_none());
    assert!(store.find_api_token(&api_secret.hash()).await.unwrap().is_none());
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(60)).await.unwrap(), None);
    assert_eq!(store.find_user(signed_in.id).await.unwrap(), Some(signed_in), "a guest seen since the cutoff stays");
    assert!(store.find_session(&session.hash()).await.unwrap().is_some());
    assert_eq!(store.find_user(young.id).await.unwrap(), Some(young));
    assert_eq!(store.find_user(cutoff_exactly.id).await.unwrap(), Some(cutoff_exactly), "created_before is exclusive");
    assert_eq!(store.find_user(full.id).await.unwrap(), Some(full), "full accounts are never purged");
}
