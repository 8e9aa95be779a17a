//! Contract cases for email verification and one-time account tokens: the newest token of a
//! purpose replaces the others, a token is used at most once (also under concurrency), expired,
//! wrong-purpose and disabled users' tokens are refused untouched, a password reset signs every
//! session out, a login challenge records its device as known to its user only, and purges by
//! cutoff and limit.

use shop::Conflict;
use shop::StoreError;
use shop::accounts::{NewAccountToken, NewSession, Role, TokenPurpose, User, UserChanges, UserQuery};
use shop::secrets::{SecretHash, SecretToken};
use uuid::Uuid;

use crate::{SharedStore, at, new_user};

/// A token of `purpose` for `user_id` with the hash of `secret`, created at `at(seconds)` and
/// valid for an hour.
pub fn new_account_token(user_id: Uuid, purpose: TokenPurpose, secret: &SecretToken, seconds: i64) -> NewAccountToken {
    NewAccountToken {
        id: shop::new_id(),
        user_id,
        purpose,
        token_hash: secret.hash(),
        created_at: at(seconds),
        expires_at: at(seconds + 3_600),
        device_hash: None,
    }
}

/// A login challenge for `user_id` confirming the device with hash `device_hash`, created at
/// `at(seconds)` and valid for an hour.
pub fn new_login_challenge(
    user_id: Uuid,
    secret: &SecretToken,
    device_hash: Option<SecretHash>,
    seconds: i64,
) -> NewAccountToken {
    NewAccountToken { device_hash, ..new_account_token(user_id, TokenPurpose::LoginChallenge, secret, seconds) }
}

/// Stores a fresh token of `purpose` for `user_id` created at `at(seconds)`; returns its secret.
async fn issue(store: &SharedStore, user_id: Uuid, purpose: TokenPurpose, seconds: i64) -> SecretToken {
    let secret = SecretToken::generate("");
    store.replace_account_token(&new_account_token(user_id, purpose, &secret, seconds)).await.unwrap();
    secret
}

/// Stores a fresh login challenge for `user_id` and `device` created at `at(seconds)`; returns
/// its secret.
async fn challenge(store: &SharedStore, user_id: Uuid, device: &SecretHash, seconds: i64) -> SecretToken {
    let secret = SecretToken::generate("");
    store.replace_account_token(&new_login_challenge(user_id, &secret, Some(*device), seconds)).await.unwrap();
    secret
}

/// The hash of a fresh device cookie.
fn new_device() -> SecretHash {
    SecretToken::generate("").hash()
}

/// Whether `device` is known for `user_id`, touching it at `at(seconds)` when so.
async fn known(store: &SharedStore, user_id: Uuid, device: &SecretHash, seconds: i64) -> bool {
    store.touch_known_device(user_id, device, at(seconds)).await.unwrap()
}

async fn insert_user(store: &SharedStore, email: &str) -> User {
    store.insert_user(&new_user(email, Role::Customer, 0), &[]).await.unwrap()
}

/// Signs `user_id` in with a new session created at `at(seconds)`; returns its secret.
async fn sign_in(store: &SharedStore, user_id: Uuid, seconds: i64) -> SecretToken {
    let secret = SecretToken::generate("");
    let session = NewSession {
        id: shop::new_id(),
        token_hash: secret.hash(),
        user_id,
        created_at: at(seconds),
        expires_at: at(seconds + 86_400),
    };
    store.insert_session(&session).await.unwrap();
    secret
}

async fn signed_in(store: &SharedStore, session: &SecretToken) -> bool {
    store.find_session(&session.hash()).await.unwrap().is_some()
}

async fn password_hash(store: &SharedStore, user: &User) -> String {
    store.find_user_by_email(&user.email).await.unwrap().unwrap().password_hash
}

async fn set_disabled(store: &SharedStore, user: &User, disabled: bool, seconds: i64) {
    let changes = UserChanges { disabled: Some(disabled), ..UserChanges::default() };
    store.update_user(user.id, &changes, at(seconds)).await.unwrap();
}

/// The user as every read path returns it; asserts that they all agree.
async fn read_everywhere(store: &SharedStore, user: &User, session: &SecretToken) -> User {
    let found = store.find_user(user.id).await.unwrap().unwrap();
    assert_eq!(store.find_user_by_email(&user.email).await.unwrap().unwrap().user, found);
    assert_eq!(store.find_user_with_password(user.id).await.unwrap().unwrap().user, found);
    let listed = store
        .list_users(&UserQuery { email_contains: Some(user.email.as_str().into()), ..UserQuery::default() })
        .await
        .unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&found));
    assert_eq!(store.find_session(&session.hash()).await.unwrap().unwrap().1, found);
    found
}

pub async fn email_verified_at_round_trips(store: SharedStore) {
    let user = insert_user(&store, "ada@example.com").await;
    assert_eq!(user.email_verified_at, None, "a new user has not verified the address");
    let session = sign_in(&store, user.id, 5).await;
    assert_eq!(read_everywhere(&store, &user, &session).await, user);

    let secret = issue(&store, user.id, TokenPurpose::EmailVerification, 10).await;
    assert_eq!(store.verify_email_with_token(&secret.hash(), at(20)).await.unwrap(), Some(user.id));
    let verified = read_everywhere(&store, &user, &session).await;
    assert_eq!(verified.email_verified_at, Some(at(20)));
    assert_eq!(verified.updated_at, at(20));
    let promoted = UserChanges { role: Some(Role::Staff), ..UserChanges::default() };
    let updated = store.update_user(user.id, &promoted, at(30)).await.unwrap();
    assert_eq!(updated.email_verified_at, Some(at(20)), "other updates keep it");
    assert_eq!(read_everywhere(&store, &user, &session).await, updated);
    assert_eq!(store.list_users(&UserQuery::default()).await.unwrap().items, [updated]);
}

pub async fn replacing_an_account_token_keeps_only_the_newest(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let verification = issue(&store, ada.id, TokenPurpose::EmailVerification, 0).await;
    let older = issue(&store, ada.id, TokenPurpose::PasswordReset, 0).await;
    let bobs = issue(&store, bob.id, TokenPurpose::PasswordReset, 5).await;
    let newest = issue(&store, ada.id, TokenPurpose::PasswordReset, 10).await;

    assert_eq!(store.reset_password_with_token(&older.hash(), "older", at(20)).await.unwrap(), None);
    assert_eq!(password_hash(&store, &ada).await, new_user("ada@example.com", Role::Customer, 0).password_hash);
    assert_eq!(store.reset_password_with_token(&newest.hash(), "newest", at(20)).await.unwrap(), Some(ada.id));
    assert_eq!(password_hash(&store, &ada).await, "newest");
    assert_eq!(
        store.verify_email_with_token(&verification.hash(), at(30)).await.unwrap(),
        Some(ada.id),
        "the other purpose's token is left alone"
    );
    assert_eq!(
        store.reset_password_with_token(&bobs.hash(), "bobs", at(30)).await.unwrap(),
        Some(bob.id),
        "other users' tokens are left alone"
    );

    // Hashes are unique across users and purposes, under one name in every dialect.
    let taken = new_account_token(bob.id, TokenPurpose::EmailVerification, &newest, 40);
    let error = store.replace_account_token(&taken).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(Conflict::DuplicateToken)), "unexpected {error:?}");
}

pub async fn password_reset_uses_the_token_once(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let phone = sign_in(&store, ada.id, 1).await;
    let laptop = sign_in(&store, ada.id, 2).await;
    let bobs_session = sign_in(&store, bob.id, 3).await;
    let adas_api_token = SecretToken::generate("skp_");
    store.insert_api_token(&crate::new_token(ada.id, &adas_api_token, 4)).await.unwrap();
    let bobs_api_token = SecretToken::generate("skp_");
    store.insert_api_token(&crate::new_token(bob.id, &bobs_api_token, 4)).await.unwrap();
    let secret = issue(&store, ada.id, TokenPurpose::PasswordReset, 10).await;

    assert_eq!(store.reset_password_with_token(&secret.hash(), "first-hash", at(20)).await.unwrap(), Some(ada.id));
    assert_eq!(password_hash(&store, &ada).await, "first-hash");
    assert_eq!(store.find_user(ada.id).await.unwrap().unwrap().updated_at, at(20));
    assert!(!signed_in(&store, &phone).await, "every session of the user is signed out");
    assert!(!signed_in(&store, &laptop).await);
    assert!(signed_in(&store, &bobs_session).await, "other users stay signed in");
    assert!(store.find_api_token(&adas_api_token.hash()).await.unwrap().is_none(), "API tokens are revoked too");
    assert!(store.find_api_token(&bobs_api_token.hash()).await.unwrap().is_some());
    assert_eq!(password_hash(&store, &bob).await, new_user("bob@example.com", Role::Customer, 0).password_hash);

    let after_reset = sign_in(&store, ada.id, 25).await;
    let before_second_use = store.find_user(ada.id).await.unwrap().unwrap();
    assert_eq!(store.reset_password_with_token(&secret.hash(), "second-hash", at(30)).await.unwrap(), None);
    assert_eq!(password_hash(&store, &ada).await, "first-hash", "a used token changes nothing");
    assert_eq!(store.find_user(ada.id).await.unwrap().unwrap(), before_second_use);
    assert!(signed_in(&store, &after_reset).await);
    assert_eq!(store.reset_password_with_token(&SecretToken::generate("").hash(), "x", at(30)).await.unwrap(), None);
}

pub async fn expired_and_wrong_purpose_tokens_are_not_usable(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let session = sign_in(&store, ada.id, 1).await;
    let reset = issue(&store, ada.id, TokenPurpose::PasswordReset, 0).await;
    let verification = issue(&store, ada.id, TokenPurpose::EmailVerification, 0).await;

    assert_eq!(store.reset_password_with_token(&reset.hash(), "late", at(3_600)).await.unwrap(), None, "expired");
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(3_601)).await.unwrap(), None, "expired");
    assert_eq!(store.verify_email_with_token(&reset.hash(), at(10)).await.unwrap(), None, "wrong purpose");
    assert_eq!(store.reset_password_with_token(&verification.hash(), "wrong", at(10)).await.unwrap(), None);
    let unchanged = store.find_user_by_email(&ada.email).await.unwrap().unwrap();
    assert_eq!(unchanged.user, ada);
    assert_eq!(unchanged.password_hash, new_user("ada@example.com", Role::Customer, 0).password_hash);
    assert!(signed_in(&store, &session).await);

    // Refusals used nothing: each token still works for its own purpose until it expires.
    assert_eq!(store.reset_password_with_token(&reset.hash(), "in-time", at(3_599)).await.unwrap(), Some(ada.id));
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(3_599)).await.unwrap(), Some(ada.id));
}

pub async fn tokens_of_disabled_users_are_not_usable(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let reset = issue(&store, ada.id, TokenPurpose::PasswordReset, 0).await;
    let verification = issue(&store, ada.id, TokenPurpose::EmailVerification, 0).await;
    let session = sign_in(&store, ada.id, 1).await;
    set_disabled(&store, &ada, true, 10).await;

    assert_eq!(store.reset_password_with_token(&reset.hash(), "new-hash", at(20)).await.unwrap(), None);
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(20)).await.unwrap(), None);
    let disabled = store.find_user_by_email(&ada.email).await.unwrap().unwrap();
    assert_eq!(disabled.password_hash, new_user("ada@example.com", Role::Customer, 0).password_hash);
    assert_eq!(disabled.user.email_verified_at, None);
    assert_eq!(disabled.user.updated_at, at(10));
    assert!(signed_in(&store, &session).await, "a refused reset signs nobody out");

    // The refusals left the tokens unused: once the user is enabled again, they work.
    set_disabled(&store, &ada, false, 30).await;
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(40)).await.unwrap(), Some(ada.id));
    assert_eq!(store.reset_password_with_token(&reset.hash(), "new-hash", at(40)).await.unwrap(), Some(ada.id));
    assert_eq!(password_hash(&store, &ada).await, "new-hash");
    assert_eq!(store.find_user(ada.id).await.unwrap().unwrap().email_verified_at, Some(at(40)));
}

pub async fn email_verification_keeps_the_first_timestamp(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let session = sign_in(&store, ada.id, 1).await;
    let first = issue(&store, ada.id, TokenPurpose::EmailVerification, 10).await;
    assert_eq!(store.verify_email_with_token(&first.hash(), at(20)).await.unwrap(), Some(ada.id));
    assert_eq!(store.verify_email_with_token(&first.hash(), at(25)).await.unwrap(), None, "used once");
    let verified = store.find_user(ada.id).await.unwrap().unwrap();
    assert_eq!((verified.email_verified_at, verified.updated_at), (Some(at(20)), at(20)));

    let second = issue(&store, ada.id, TokenPurpose::EmailVerification, 30).await;
    assert_eq!(store.verify_email_with_token(&second.hash(), at(40)).await.unwrap(), Some(ada.id));
    let again = store.find_user_by_email(&ada.email).await.unwrap().unwrap();
    assert_eq!(again.user.email_verified_at, Some(at(20)), "the first verification is kept");
    assert_eq!(again.user.updated_at, at(40));
    assert_eq!(again.password_hash, new_user("ada@example.com", Role::Customer, 0).password_hash);
    assert!(signed_in(&store, &session).await, "verifying signs nobody out");
}

pub async fn concurrent_password_resets_have_one_winner(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let sessions = [sign_in(&store, ada.id, 1).await, sign_in(&store, ada.id, 2).await];
    let secret = issue(&store, ada.id, TokenPurpose::PasswordReset, 10).await;
    let mut contenders = tokio::task::JoinSet::new();
    for contender in 0..8 {
        let store = store.clone();
        let token_hash = secret.hash();
        contenders.spawn(async move {
            let password_hash = format!("hash-{contender}");
            let used = store.reset_password_with_token(&token_hash, &password_hash, at(20)).await.unwrap();
            used.map(|user_id| (user_id, password_hash))
        });
    }
    let mut winners = Vec::new();
    while let Some(outcome) = contenders.join_next().await {
        winners.extend(outcome.unwrap());
    }
    assert_eq!(winners.len(), 1, "exactly one use succeeds: {winners:?}");
    let (user_id, winning_hash) = winners.remove(0);
    assert_eq!(user_id, ada.id);
    assert_eq!(password_hash(&store, &ada).await, winning_hash);
    for session in &sessions {
        assert!(!signed_in(&store, session).await);
    }
}

pub async fn account_tokens_are_purged_by_cutoff_and_limit(store: SharedStore) {
    let mut users = Vec::new();
    for email in ["a@example.com", "b@example.com", "c@example.com", "d@example.com"] {
        users.push(insert_user(&store, email).await);
    }
    // Expires at 3 600 + 100 = 3 700.
    let expired = issue(&store, users[0].id, TokenPurpose::PasswordReset, 100).await;
    // Used at 200, long before it would expire.
    let used_early = issue(&store, users[1].id, TokenPurpose::EmailVerification, 150).await;
    assert!(store.verify_email_with_token(&used_early.hash(), at(200)).await.unwrap().is_some());
    // Used at 4 000.
    let used_late = issue(&store, users[2].id, TokenPurpose::PasswordReset, 1_000).await;
    assert!(store.reset_password_with_token(&used_late.hash(), "late", at(4_000)).await.unwrap().is_some());
    // Unused, expires at 5 600.
    let live = issue(&store, users[3].id, TokenPurpose::PasswordReset, 2_000).await;

    let cutoff = at(3_800);
    assert_eq!(store.purge_account_tokens(cutoff, 0).await.unwrap(), 0, "a zero limit deletes nothing");
    assert_eq!(store.purge_account_tokens(cutoff, 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(store.purge_account_tokens(cutoff, 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.purge_account_tokens(cutoff, 10).await.unwrap(), 0);
    // A purged token's hash is free again; a kept one's is not.
    for purged in [&expired, &used_early] {
        let reissued = new_account_token(users[0].id, TokenPurpose::PasswordReset, purged, 5_000);
        store.replace_account_token(&reissued).await.unwrap();
    }
    let kept = new_account_token(users[0].id, TokenPurpose::PasswordReset, &used_late, 5_000);
    assert!(matches!(store.replace_account_token(&kept).await, Err(StoreError::Conflict { .. })));

    assert_eq!(store.purge_account_tokens(at(4_000), 10).await.unwrap(), 0, "the cutoff is exclusive");
    assert_eq!(store.purge_account_tokens(at(4_001), 10).await.unwrap(), 1, "used before the cutoff");
    assert_eq!(
        store.reset_password_with_token(&live.hash(), "live", at(5_000)).await.unwrap(),
        Some(users[3].id),
        "an unused, unexpired token is kept"
    );
}

pub async fn login_challenges_record_their_device(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let laptop = new_device();
    let phone = new_device();
    assert!(!known(&store, ada.id, &laptop, 0).await, "no device is known at first");

    let secret = challenge(&store, ada.id, &laptop, 10).await;
    assert!(!known(&store, ada.id, &laptop, 15).await, "an unconfirmed challenge records nothing");
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(20)).await.unwrap(), Some(ada.id));
    assert!(known(&store, ada.id, &laptop, 30).await);
    assert!(!known(&store, bob.id, &laptop, 30).await, "known to its user only");
    assert!(!known(&store, ada.id, &phone, 30).await, "only the challenged device");
    assert_eq!(store.find_user(ada.id).await.unwrap().unwrap(), ada, "confirming changes no user");

    // Confirming a device that is already known refreshes it instead of conflicting.
    store.remember_device(bob.id, &phone, at(40)).await.unwrap();
    let bobs = challenge(&store, bob.id, &phone, 50).await;
    assert_eq!(store.confirm_login_challenge(&bobs.hash(), at(60)).await.unwrap(), Some(bob.id));
    assert!(known(&store, bob.id, &phone, 70).await);
    assert!(!known(&store, ada.id, &phone, 70).await);
}

pub async fn login_challenges_are_used_once(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let laptop = new_device();
    let secret = challenge(&store, ada.id, &laptop, 10).await;
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(20)).await.unwrap(), Some(ada.id));
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(25)).await.unwrap(), None, "used once");
    assert!(known(&store, ada.id, &laptop, 30).await, "the refusal forgets nothing");
    assert_eq!(store.confirm_login_challenge(&SecretToken::generate("").hash(), at(30)).await.unwrap(), None);
}

pub async fn replacing_a_login_challenge_keeps_only_the_newest(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let laptop = new_device();
    let phone = new_device();
    let older = challenge(&store, ada.id, &laptop, 0).await;
    let reset = issue(&store, ada.id, TokenPurpose::PasswordReset, 5).await;
    let phones = challenge(&store, ada.id, &phone, 8).await;
    let newer = challenge(&store, ada.id, &laptop, 10).await;

    assert_eq!(store.confirm_login_challenge(&older.hash(), at(20)).await.unwrap(), None);
    assert!(!known(&store, ada.id, &laptop, 25).await, "the replaced challenge's device stays unknown");
    assert_eq!(store.confirm_login_challenge(&newer.hash(), at(30)).await.unwrap(), Some(ada.id));
    assert!(known(&store, ada.id, &laptop, 35).await);
    assert!(!known(&store, ada.id, &phone, 35).await);
    assert_eq!(
        store.confirm_login_challenge(&phones.hash(), at(36)).await.unwrap(),
        Some(ada.id),
        "another device's challenge is not replaced"
    );
    assert_eq!(
        store.reset_password_with_token(&reset.hash(), "new-hash", at(40)).await.unwrap(),
        Some(ada.id),
        "the other purposes' tokens are left alone"
    );
}

pub async fn unusable_login_challenges_record_nothing(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let laptop = new_device();

    // A challenge that names no device confirms nothing, and stays refused.
    let deviceless = SecretToken::generate("");
    store.replace_account_token(&new_login_challenge(ada.id, &deviceless, None, 0)).await.unwrap();
    assert_eq!(store.confirm_login_challenge(&deviceless.hash(), at(10)).await.unwrap(), None);

    let secret = challenge(&store, ada.id, &laptop, 20).await;
    let verification = issue(&store, ada.id, TokenPurpose::EmailVerification, 20).await;
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(3_620)).await.unwrap(), None, "expired");
    assert_eq!(store.confirm_login_challenge(&verification.hash(), at(30)).await.unwrap(), None, "wrong purpose");
    assert_eq!(store.verify_email_with_token(&secret.hash(), at(30)).await.unwrap(), None, "wrong purpose");
    assert_eq!(store.reset_password_with_token(&secret.hash(), "wrong", at(30)).await.unwrap(), None);
    set_disabled(&store, &ada, true, 40).await;
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(50)).await.unwrap(), None, "disabled user");
    assert!(!known(&store, ada.id, &laptop, 60).await);
    assert_eq!(store.find_user(ada.id).await.unwrap().unwrap().updated_at, at(40));

    // The refusals left the challenge unused: once the user is enabled again, it works in time.
    set_disabled(&store, &ada, false, 70).await;
    assert_eq!(store.confirm_login_challenge(&secret.hash(), at(3_619)).await.unwrap(), Some(ada.id));
    assert!(known(&store, ada.id, &laptop, 3_620).await);
    assert_eq!(store.verify_email_with_token(&verification.hash(), at(3_619)).await.unwrap(), Some(ada.id));
}

pub async fn concurrent_login_challenge_confirmations_have_one_winner(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let laptop = new_device();
    let secret = challenge(&store, ada.id, &laptop, 10).await;
    let mut contenders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let token_hash = secret.hash();
        contenders.spawn(async move { store.confirm_login_challenge(&token_hash, at(20)).await.unwrap() });
    }
    let mut winners = Vec::new();
    while let Some(outcome) = contenders.join_next().await {
        winners.extend(outcome.unwrap());
    }
    assert_eq!(winners, [ada.id], "exactly one confirmation succeeds");
    assert!(known(&store, ada.id, &laptop, 30).await);
}

pub async fn remembered_devices_are_known_to_their_user(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let laptop = new_device();
    assert!(!known(&store, ada.id, &laptop, 0).await);

    store.remember_device(ada.id, &laptop, at(10)).await.unwrap();
    assert!(known(&store, ada.id, &laptop, 20).await, "remembered");
    assert!(known(&store, ada.id, &laptop, 30).await, "touching (which refreshes last_seen_at) keeps it known");
    assert!(!known(&store, bob.id, &laptop, 30).await, "known to its user only");
    assert!(!known(&store, ada.id, &new_device(), 30).await);
    store.remember_device(ada.id, &laptop, at(40)).await.unwrap();
    assert!(known(&store, ada.id, &laptop, 50).await, "remembering twice refreshes the one device");

    let unknown_user = store.remember_device(shop::new_id(), &laptop, at(60)).await.unwrap_err();
    assert!(matches!(unknown_user, StoreError::Conflict { .. }), "unexpected {unknown_user:?}");
    assert!(!known(&store, bob.id, &laptop, 70).await);
}

pub async fn known_devices_unseen_since_the_cutoff_are_forgotten(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let devices: Vec<SecretHash> = (0..4).map(|_| SecretToken::generate("").hash()).collect();
    for (index, device) in devices.iter().enumerate() {
        store.remember_device(ada.id, device, at(index as i64 * 10)).await.unwrap();
    }
    // Last seen at 0, 10, 20, 30: a cutoff of 25 finds three, the limit takes two.
    assert_eq!(store.purge_known_devices(at(25), 2).await.unwrap(), 2);
    assert_eq!(store.purge_known_devices(at(25), 10).await.unwrap(), 1);
    assert_eq!(store.purge_known_devices(at(30), 10).await.unwrap(), 0, "the cutoff is exclusive");
    for (index, device) in devices.iter().enumerate() {
        let known = store.touch_known_device(ada.id, device, at(40)).await.unwrap();
        assert_eq!(known, index == 3, "device {index}");
    }
}
