//! Contract cases for sign-in with external identity providers: a pending login is taken at most
//! once (also under concurrency) and never after it expired, abandoned ones are purged by cutoff
//! and limit, an issuer's subject links to one account (the same subject under another issuer is
//! another identity), an account created through a provider comes with its link and jobs or not at
//! all, links go with their account, and an account's last way to sign in is never unlinked (also
//! under concurrency).

use shop::Conflict;
use shop::StoreError;
use shop::accounts::{
    Email, ExternalIdentity, MAX_ISSUER_LEN, MAX_SUBJECT_LEN, NewUser, PendingExternalLogin, Role, User,
};
use shop::jobs::JobQuery;
use shop::secrets::SecretToken;
use uuid::Uuid;

use crate::{SharedStore, at, new_guest, new_job, new_user};

/// A pending login at `provider` started at `at(seconds)` and valid for ten minutes, under the
/// hash of a fresh handle.
pub fn new_pending_login(provider: &str, seconds: i64) -> PendingExternalLogin {
    PendingExternalLogin {
        handle_hash: SecretToken::generate("").hash(),
        provider: provider.to_owned(),
        state: format!("state-{}", Uuid::now_v7().simple()),
        nonce: format!("nonce-{}", Uuid::now_v7().simple()),
        pkce_verifier: format!("verifier-{}", Uuid::now_v7().simple()),
        return_to: "/orders?page=2&sort=newest#café".to_owned(),
        created_at: at(seconds),
        expires_at: at(seconds + 600),
    }
}

/// The issuer most cases link at.
pub const ISSUER: &str = "https://idp.example";
/// Another issuer, where the same subjects are other people.
pub const OTHER_ISSUER: &str = "https://other-idp.example/tenant";

/// A link from `issuer`'s `subject` to `user_id`, made at `at(seconds)`.
pub fn new_identity(issuer: &str, subject: &str, user_id: Uuid, seconds: i64) -> ExternalIdentity {
    ExternalIdentity {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        user_id,
        email: Some(Email::parse("ada@idp.example").unwrap()),
        created_at: at(seconds),
    }
}

async fn insert_user(store: &SharedStore, email: &str) -> User {
    store.insert_user(&new_user(email, Role::Customer, 0), &[]).await.unwrap()
}

async fn insert_pending(store: &SharedStore, login: &PendingExternalLogin) {
    store.insert_pending_external_login(login).await.unwrap();
}

async fn take(store: &SharedStore, login: &PendingExternalLogin, seconds: i64) -> Option<PendingExternalLogin> {
    store.take_pending_external_login(&login.handle_hash, at(seconds)).await.unwrap()
}

async fn linked_user(store: &SharedStore, issuer: &str, subject: &str) -> Option<User> {
    store.find_user_by_external_identity(issuer, subject).await.unwrap()
}

fn assert_conflict(result: Result<impl std::fmt::Debug, StoreError>, expected: Conflict) {
    let error = result.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(conflict) if *conflict == expected), "{error:?}");
}

pub async fn pending_external_logins_are_taken_once(store: SharedStore) {
    let login = new_pending_login("example", 0);
    let other = new_pending_login("example", 0);
    insert_pending(&store, &login).await;
    insert_pending(&store, &other).await;
    assert_eq!(take(&store, &new_pending_login("example", 0), 1).await, None, "an unknown handle");

    assert_eq!(take(&store, &login, 1).await, Some(login.clone()), "every field round-trips");
    assert_eq!(take(&store, &login, 2).await, None, "a pending login is taken once");
    assert_eq!(take(&store, &other, 599).await, Some(other), "taking one leaves the others");
}

pub async fn expired_pending_external_logins_are_not_returned(store: SharedStore) {
    let login = new_pending_login("example", 0);
    insert_pending(&store, &login).await;
    assert_eq!(take(&store, &login, 600).await, None, "expired at expires_at");
    assert_eq!(take(&store, &login, 1).await, None, "and taken nonetheless: it is gone");

    let late = new_pending_login("example", 0);
    insert_pending(&store, &late).await;
    assert_eq!(take(&store, &late, 10_000).await, None);
    assert_eq!(store.purge_pending_external_logins(at(100_000), 10).await.unwrap(), 0, "nothing left to purge");
}

pub async fn concurrent_takes_of_a_pending_login_have_one_winner(store: SharedStore) {
    let login = new_pending_login("example", 0);
    insert_pending(&store, &login).await;
    let mut contenders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let handle_hash = login.handle_hash;
        contenders.spawn(async move { store.take_pending_external_login(&handle_hash, at(1)).await.unwrap() });
    }
    let mut winners = Vec::new();
    while let Some(outcome) = contenders.join_next().await {
        winners.extend(outcome.unwrap());
    }
    assert_eq!(winners, [login], "exactly one take gets it");
}

pub async fn pending_external_logins_are_purged_by_cutoff_and_limit(store: SharedStore) {
    // Expiring at 600, 700, 800 and 900.
    let logins: Vec<PendingExternalLogin> = (0..4).map(|index| new_pending_login("example", index * 100)).collect();
    for login in &logins {
        insert_pending(&store, login).await;
    }
    assert_eq!(store.purge_pending_external_logins(at(800), 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_pending_external_logins(at(800), 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.purge_pending_external_logins(at(800), 10).await.unwrap(), 0);
    assert_eq!(take(&store, &logins[0], 0).await, None);
    assert_eq!(take(&store, &logins[1], 0).await, None);
    assert_eq!(take(&store, &logins[2], 0).await, Some(logins[2].clone()), "the cutoff is exclusive");
    assert_eq!(take(&store, &logins[3], 0).await, Some(logins[3].clone()));
}

pub async fn external_identities_link_and_find(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let identity = new_identity(ISSUER, "248289761001", ada.id, 10);
    store.link_external_identity(&identity).await.unwrap();

    assert_eq!(linked_user(&store, ISSUER, "248289761001").await, Some(ada.clone()));
    assert_eq!(
        store.list_external_identities(ada.id).await.unwrap(),
        std::slice::from_ref(&identity),
        "every field round-trips"
    );
    assert_eq!(linked_user(&store, ISSUER, "unknown").await, None);
    assert_eq!(
        linked_user(&store, OTHER_ISSUER, "248289761001").await,
        None,
        "the same subject under another issuer is separate"
    );
    assert!(store.list_external_identities(bob.id).await.unwrap().is_empty());

    let elsewhere = ExternalIdentity { email: None, ..new_identity(OTHER_ISSUER, "248289761001", bob.id, 20) };
    store.link_external_identity(&elsewhere).await.unwrap();
    assert_eq!(linked_user(&store, OTHER_ISSUER, "248289761001").await, Some(bob.clone()));
    assert_eq!(linked_user(&store, ISSUER, "248289761001").await, Some(ada.clone()));
    assert_eq!(store.list_external_identities(bob.id).await.unwrap(), std::slice::from_ref(&elsewhere));

    // The longest issuer and subject the service accepts fit.
    let issuer = format!("https://idp.example/{}", "t".repeat(MAX_ISSUER_LEN - "https://idp.example/".len()));
    let longest = new_identity(&issuer, &"s".repeat(MAX_SUBJECT_LEN), bob.id, 30);
    store.link_external_identity(&longest).await.unwrap();
    assert_eq!(linked_user(&store, &longest.issuer, &longest.subject).await, Some(bob.clone()));
    assert_eq!(store.list_external_identities(bob.id).await.unwrap(), [elsewhere, longest]);

    // Oldest first; links made at the same time by issuer, then subject.
    let later = new_identity(ISSUER, "a-later-one", ada.id, 30);
    let tied_b = new_identity("https://beta.example", "2", ada.id, 20);
    let tied_a2 = new_identity("https://alpha.example", "2", ada.id, 20);
    let tied_a1 = new_identity("https://alpha.example", "1", ada.id, 20);
    for link in [&later, &tied_b, &tied_a2, &tied_a1] {
        store.link_external_identity(link).await.unwrap();
    }
    assert_eq!(store.list_external_identities(ada.id).await.unwrap(), [identity, tied_a1, tied_a2, tied_b, later]);
}

pub async fn linking_a_linked_subject_is_a_conflict(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_user(&store, "bob@example.com").await;
    let identity = new_identity(ISSUER, "subject-1", ada.id, 10);
    store.link_external_identity(&identity).await.unwrap();

    let to_bob = new_identity(ISSUER, "subject-1", bob.id, 20);
    assert_conflict(store.link_external_identity(&to_bob).await, Conflict::IdentityLinked);
    assert_conflict(store.link_external_identity(&identity).await, Conflict::IdentityLinked);
    assert_eq!(linked_user(&store, ISSUER, "subject-1").await, Some(ada.clone()), "the first link stays");
    assert_eq!(store.list_external_identities(ada.id).await.unwrap(), [identity]);
    assert!(store.list_external_identities(bob.id).await.unwrap().is_empty());
}

pub async fn linking_to_an_unknown_user_is_a_conflict(store: SharedStore) {
    let nobody = shop::new_id();
    let identity = new_identity(ISSUER, "subject-1", nobody, 10);
    assert_conflict(store.link_external_identity(&identity).await, Conflict::UnknownUser);
    assert_eq!(linked_user(&store, ISSUER, "subject-1").await, None);
    assert!(store.list_external_identities(nobody).await.unwrap().is_empty());
}

pub async fn insert_external_user_creates_the_user_identity_and_jobs_atomically(store: SharedStore) {
    let new = new_user("ada@example.com", Role::Customer, 0);
    let identity = new_identity(ISSUER, "subject-1", new.id, 0);
    let welcome = new_job("mail.welcome", 0).queue("mail");
    let audit = new_job("audit.signup", 0);
    let ada =
        store.insert_external_user(&new, Some(at(5)), &identity, &[welcome.clone(), audit.clone()]).await.unwrap();
    assert_eq!(ada.id, new.id);
    assert_eq!(ada.email, new.email);
    assert_eq!(ada.email_verified_at, Some(at(5)));
    assert!(!ada.guest);
    assert_eq!(ada.created_at, at(0));
    assert_eq!(linked_user(&store, ISSUER, "subject-1").await, Some(ada.clone()));
    let by_email = store.find_user_by_email(&new.email).await.unwrap().unwrap();
    assert_eq!(by_email.user, ada);
    assert_eq!(by_email.password_hash, new.password_hash);
    assert_eq!(store.find_user(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.list_external_identities(ada.id).await.unwrap(), [identity]);
    assert_eq!(store.find_job(welcome.id).await.unwrap().unwrap().payload, welcome.payload);
    assert_eq!(store.find_job(audit.id).await.unwrap().unwrap().queue, "default");

    let unverified = new_user("bob@example.com", Role::Customer, 1);
    let bob = store
        .insert_external_user(&unverified, None, &new_identity(ISSUER, "subject-2", unverified.id, 1), &[])
        .await
        .unwrap();
    assert_eq!(bob.email_verified_at, None, "the provider did not verify the address");
    assert_eq!(linked_user(&store, ISSUER, "subject-2").await, Some(bob));
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 2);

    // A taken address: no account, no link, no job.
    let taken = new_user("ada@example.com", Role::Customer, 2);
    let orphan = new_job("mail.welcome", 2).queue("mail");
    let result = store
        .insert_external_user(
            &taken,
            Some(at(2)),
            &new_identity(ISSUER, "subject-3", taken.id, 2),
            std::slice::from_ref(&orphan),
        )
        .await;
    assert_conflict(result, Conflict::EmailTaken);
    assert_eq!(linked_user(&store, ISSUER, "subject-3").await, None);
    assert!(store.list_external_identities(taken.id).await.unwrap().is_empty());
    assert!(store.find_job(orphan.id).await.unwrap().is_none());

    // A subject linked already: no account, no job.
    let carol = new_user("carol@example.com", Role::Customer, 3);
    let stray = new_job("mail.welcome", 3).queue("mail");
    let result = store
        .insert_external_user(
            &carol,
            Some(at(3)),
            &new_identity(ISSUER, "subject-1", carol.id, 3),
            std::slice::from_ref(&stray),
        )
        .await;
    assert_conflict(result, Conflict::IdentityLinked);
    assert!(store.find_user(carol.id).await.unwrap().is_none());
    assert!(store.find_user_by_email(&carol.email).await.unwrap().is_none());
    assert!(store.find_job(stray.id).await.unwrap().is_none());
    assert_eq!(linked_user(&store, ISSUER, "subject-1").await, Some(ada), "the first link stays");
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 2, "failed sign-ups left no job");
}

pub async fn external_identities_go_with_their_user(store: SharedStore) {
    let guest = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let ada = insert_user(&store, "ada@example.com").await;
    store.link_external_identity(&new_identity(ISSUER, "guest-subject", guest.id, 0)).await.unwrap();
    store.link_external_identity(&new_identity(OTHER_ISSUER, "guest-subject", guest.id, 0)).await.unwrap();
    let kept = new_identity(ISSUER, "ada-subject", ada.id, 0);
    store.link_external_identity(&kept).await.unwrap();

    assert_eq!(store.delete_idle_guests(at(50), 10).await.unwrap(), 1);
    assert_eq!(linked_user(&store, ISSUER, "guest-subject").await, None);
    assert_eq!(linked_user(&store, OTHER_ISSUER, "guest-subject").await, None);
    assert!(store.list_external_identities(guest.id).await.unwrap().is_empty());
    assert_eq!(store.list_external_identities(ada.id).await.unwrap(), [kept]);
    // The rows are gone, not only unreachable: the subject can be linked again.
    store.link_external_identity(&new_identity(ISSUER, "guest-subject", ada.id, 60)).await.unwrap();
    assert_eq!(linked_user(&store, ISSUER, "guest-subject").await, Some(ada));
}

/// An account made by a provider sign-in: its password hash is a marker, no PHC string.
async fn insert_passwordless_user(store: &SharedStore, email: &str) -> User {
    let user = NewUser { password_hash: "!external".into(), ..new_user(email, Role::Customer, 0) };
    store.insert_user(&user, &[]).await.unwrap()
}

pub async fn external_identities_are_unlinked_only_by_their_account(store: SharedStore) {
    let ada = insert_user(&store, "ada@example.com").await;
    let bob = insert_passwordless_user(&store, "bob@example.com").await;
    let adas = new_identity(ISSUER, "ada-subject", ada.id, 0);
    let bobs = new_identity(ISSUER, "bob-subject", bob.id, 0);
    let bobs_other = new_identity(OTHER_ISSUER, "bob-subject", bob.id, 1);
    for link in [&adas, &bobs, &bobs_other] {
        store.link_external_identity(link).await.unwrap();
    }
    // Someone else's link, an unknown one, the right subject at another issuer: not found.
    let result = store.unlink_external_identity(ada.id, ISSUER, "bob-subject", &[]).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let result = store.unlink_external_identity(ada.id, ISSUER, "unknown", &[]).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let result = store.unlink_external_identity(ada.id, OTHER_ISSUER, "ada-subject", &[]).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let result = store.unlink_external_identity(shop::new_id(), ISSUER, "ada-subject", &[]).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    assert_eq!(store.list_external_identities(bob.id).await.unwrap(), [bobs.clone(), bobs_other.clone()]);

    // An account with a password may unlink its only link, with its jobs.
    let mail = new_job("mail.send", 5).queue("mail");
    store.unlink_external_identity(ada.id, ISSUER, "ada-subject", std::slice::from_ref(&mail)).await.unwrap();
    assert!(store.list_external_identities(ada.id).await.unwrap().is_empty());
    assert_eq!(linked_user(&store, ISSUER, "ada-subject").await, None);
    assert_eq!(store.find_job(mail.id).await.unwrap().unwrap().payload, mail.payload);
    let again = store.unlink_external_identity(ada.id, ISSUER, "ada-subject", &[]).await;
    assert!(matches!(again, Err(StoreError::NotFound)), "unlinked once: {again:?}");

    // Without a password, one of two links may go, the last one not: nothing changes, no job.
    store.unlink_external_identity(bob.id, OTHER_ISSUER, "bob-subject", &[]).await.unwrap();
    let orphan = new_job("mail.send", 6).queue("mail");
    assert_conflict(
        store.unlink_external_identity(bob.id, ISSUER, "bob-subject", std::slice::from_ref(&orphan)).await,
        Conflict::LastSignInMethod,
    );
    assert_eq!(store.list_external_identities(bob.id).await.unwrap(), [bobs]);
    assert_eq!(linked_user(&store, ISSUER, "bob-subject").await, Some(bob));
    assert!(store.find_job(orphan.id).await.unwrap().is_none());
    // The subject unlinked from Ada can be linked anew.
    store.link_external_identity(&new_identity(ISSUER, "ada-subject", ada.id, 10)).await.unwrap();
    assert_eq!(linked_user(&store, ISSUER, "ada-subject").await, Some(ada));
}

pub async fn concurrent_unlinks_of_the_last_two_external_identities_leave_one(store: SharedStore) {
    for round in 0..5 {
        let carol = insert_passwordless_user(&store, &format!("carol{round}@example.com")).await;
        let first = new_identity(ISSUER, &format!("carol-{round}"), carol.id, 0);
        let second = new_identity(OTHER_ISSUER, &format!("carol-{round}"), carol.id, 0);
        store.link_external_identity(&first).await.unwrap();
        store.link_external_identity(&second).await.unwrap();
        let mut contenders = tokio::task::JoinSet::new();
        for link in [first.clone(), second.clone()] {
            let store = store.clone();
            contenders.spawn(async move {
                store.unlink_external_identity(link.user_id, &link.issuer, &link.subject, &[]).await
            });
        }
        let (mut unlinked, mut refused) = (0, 0);
        while let Some(outcome) = contenders.join_next().await {
            match outcome.unwrap() {
                Ok(()) => unlinked += 1,
                Err(StoreError::Conflict(Conflict::LastSignInMethod)) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((unlinked, refused), (1, 1), "exactly one unlink goes");
        assert_eq!(store.list_external_identities(carol.id).await.unwrap().len(), 1, "one way in stays");
    }
}
