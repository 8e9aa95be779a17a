//! The account use cases: sign-up, login, sessions, API tokens and the admin's user management.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::throttle::{LoginThrottle, NoLoginThrottle};
use super::user::{
    ApiToken, AuthMethod, Caller, NewApiTokenRecord, NewSession, NewUser, Session, User, UserChanges, UserQuery,
};
use super::{Email, PasswordHasher, PasswordPlain, PersonName, Role};
use crate::cache::{CacheHandle, CacheSettings, Family, ReadCache};
use crate::clock::Clock;
use crate::error::{Error, StoreError};
use crate::jobs::JobPayload;
use crate::pagination::Page;
use crate::ports::Store;
use crate::secrets::{SecretHash, SecretToken};
use crate::validation::ValidationErrors;

/// The most API tokens one user may hold; keeps the list bounded.
pub const MAX_API_TOKENS_PER_USER: usize = 20;
/// A session's `last_seen_at` is written at most this often, to spare the database a write per request.
const TOUCH_INTERVAL: Duration = Duration::minutes(1);
/// Prefix of every personal API token, so leaked tokens are easy to recognise and scan for.
pub const API_TOKEN_PREFIX: &str = "skp_";

/// Session lifetimes.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// A session ends this long after login, however active.
    pub session_absolute_ttl: Duration,
    /// A session ends after this long without a request.
    pub session_idle_ttl: Duration,
    /// The shop's name in the mail it sends.
    pub shop_name: String,
    /// Where links in mail point: `{link_base_url}/verify-email?token=…`,
    /// `{link_base_url}/reset-password?token=…` (the storefront's pages, which call the API).
    pub link_base_url: String,
    /// How long a verification link works.
    pub verification_ttl: Duration,
    /// How long a password reset link works.
    pub password_reset_ttl: Duration,
    /// How long a browser has to come back from an external provider's sign-in page.
    pub external_login_ttl: Duration,
    /// Roles whose sign-ins from unknown devices wait for a mailed confirmation.
    pub login_challenge_roles: Vec<Role>,
    /// How long a login challenge link works.
    pub login_challenge_ttl: Duration,
    /// A guest's session ends after this long unused; the guest is deleted once its sessions are gone.
    pub guest_idle_ttl: Duration,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            session_absolute_ttl: Duration::days(30),
            session_idle_ttl: Duration::days(7),
            shop_name: "Shopkeep".into(),
            link_base_url: "http://localhost:8080".into(),
            verification_ttl: Duration::hours(48),
            password_reset_ttl: Duration::minutes(30),
            login_challenge_roles: vec![Role::Staff, Role::Admin],
            login_challenge_ttl: Duration::minutes(15),
            guest_idle_ttl: Duration::hours(24),
            external_login_ttl: Duration::minutes(10),
        }
    }
}

/// A successful sign-up or login: the user and the new session's secret (for the cookie).
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub session_token: SecretToken,
    pub expires_at: OffsetDateTime,
    /// How long the session lives from now (for the cookie's `Max-Age`).
    pub lifetime: Duration,
}

/// How a correct login ended.
#[derive(Debug)]
pub enum LoginOutcome {
    SignedIn(SignedIn),
    /// The device is new to a challenged account: no session; the caller checks its mail limits
    /// and has the confirmation link mailed ([`AccountService::send_login_challenge`]). Sign in
    /// again from this device once it is confirmed.
    Challenged(ChallengeRequired),
}

/// A sign-in held until its owner confirms the device from a mailed link.
#[derive(Debug, Clone)]
pub struct ChallengeRequired {
    pub user_id: Uuid,
    /// Where the link goes (for the caller's per-address mail limit).
    pub email: Email,
    pub device_hash: SecretHash,
    /// The network address the sign-in came from, shown in the mail.
    pub from_address: String,
}

/// A freshly created API token with its secret, which is never retrievable again.
#[derive(Debug)]
pub struct NewApiToken {
    pub token: ApiToken,
    pub secret: SecretToken,
}

/// Accounts, sessions and API tokens.
#[derive(Clone)]
pub struct AccountService {
    pub(super) store: Arc<dyn Store>,
    pub(super) hasher: PasswordHasher,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: AccountSettings,
    throttle: Arc<dyn LoginThrottle>,
    caches: SignInCaches,
    /// The `login_challenges` flag can switch the new-device challenge off; none: always on.
    flags: Option<crate::flags::FlagService>,
}

/// Cached sign-ins by the hash of their secret: a session or API token with its user, or
/// `None` for an unknown secret. Of the accounts family (a logout, a role change, a disabled
/// account bump it in this process); an entry lives at most the cache's `max_staleness`, which
/// bounds how long another instance's logout or role change takes to reach this one.
#[derive(Clone, Debug)]
pub struct SignInCaches {
    pub sessions: ReadCache<SecretHash, Option<(Session, User)>>,
    pub api_tokens: ReadCache<SecretHash, Option<(ApiToken, User)>>,
}

impl SignInCaches {
    fn new(store: &Arc<dyn Store>, clock: &Arc<dyn Clock>, settings: &CacheSettings) -> Self {
        let generations = store.generations();
        let settings = CacheSettings {
            ttl: settings.ttl.min(settings.max_staleness),
            negative_ttl: settings.negative_ttl.min(settings.max_staleness),
            ..settings.clone()
        };
        let accounts = Family::Accounts;
        Self {
            sessions: ReadCache::new("sessions", accounts, Arc::clone(&generations), Arc::clone(clock), &settings),
            api_tokens: ReadCache::new("api_tokens", accounts, generations, Arc::clone(clock), &settings),
        }
    }

    pub fn handles(&self) -> Vec<Arc<dyn CacheHandle>> {
        vec![Arc::new(self.sessions.clone()), Arc::new(self.api_tokens.clone())]
    }
}

impl AccountService {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        settings: AccountSettings,
    ) -> Self {
        let disabled = CacheSettings { enabled: false, ..CacheSettings::default() };
        let caches = SignInCaches::new(&store, &clock, &disabled);
        Self { store, hasher, clock, settings, throttle: Arc::new(NoLoginThrottle), caches, flags: None }
    }

    /// Sign-in lookups (sessions, API tokens) go through caches with `settings`.
    pub fn with_cache(mut self, settings: &CacheSettings) -> Self {
        self.caches = SignInCaches::new(&self.store, &self.clock, settings);
        self
    }

    pub fn caches(&self) -> &SignInCaches {
        &self.caches
    }

    /// The same service with failed sign-ins counted (and accounts locked) by `throttle`.
    pub fn with_login_throttle(mut self, throttle: Arc<dyn LoginThrottle>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Consults the `login_challenges` flag before challenging a sign-in from a new device.
    pub fn with_flags(mut self, flags: crate::flags::FlagService) -> Self {
        self.flags = Some(flags);
        self
    }

    /// Creates a customer account and signs it in; the verification mail is queued in the same
    /// transaction as the account.
    pub async fn sign_up(&self, email: Email, password: PasswordPlain, name: PersonName) -> Result<SignedIn, Error> {
        let id = crate::new_id();
        let jobs = [super::links::send_link_job(&super::SendVerificationJob { user_id: id }, self.clock.now())];
        let user = self.insert_user(id, email, password, name, Role::Customer, &jobs).await?;
        self.start_session(user).await
    }

    /// Creates an account with the given role (used by sign-up and by `shopkeep admin create-user`).
    pub async fn create_user(
        &self,
        email: Email,
        password: PasswordPlain,
        name: PersonName,
        role: Role,
    ) -> Result<User, Error> {
        self.insert_user(crate::new_id(), email, password, name, role, &[]).await
    }

    async fn insert_user(
        &self,
        id: Uuid,
        email: Email,
        password: PasswordPlain,
        name: PersonName,
        role: Role,
        jobs: &[crate::jobs::NewJob],
    ) -> Result<User, Error> {
        let password_hash = self.hasher.hash(&password).await?;
        let new_user = NewUser { id, email, name, role, password_hash, guest: false, created_at: self.clock.now() };
        self.store.insert_user(&new_user, jobs).await.map_err(|error| match error {
            StoreError::Conflict(_) => Error::Conflict("an account with this email already exists".into()),
            other => other.into(),
        })
    }

    /// Checks the credentials and starts a new session — unless the account's role is challenged
    /// and `device` (the hash of the browser's device cookie) has never signed in to it: then a
    /// confirmation link is mailed instead ([`LoginOutcome::Challenged`]). Every failure is the
    /// same [`Error::InvalidCredentials`] after the same amount of hashing work. An account
    /// locked after too many failures is refused first ([`Error::AccountLocked`]); a finished
    /// attempt counts towards the lock, and the owner of an account this attempt locked is
    /// told by mail.
    pub async fn log_in(
        &self,
        email: &str,
        password: &str,
        previous_session: Option<&SecretToken>,
        device: &SecretHash,
        from_address: &str,
    ) -> Result<LoginOutcome, Error> {
        if let Some(lock) = self.throttle.lock(email).await {
            return Err(Error::AccountLocked(lock));
        }
        let result = self.check_password_and_finish(email, password, previous_session, device, from_address).await;
        // A challenged sign-in neither clears nor counts towards the lockout: it has not
        // finished. Nor does one that failed for a reason of ours.
        if !matches!(result, Err(Error::Internal(_)) | Ok(LoginOutcome::Challenged(_)))
            && let Some(locked_for) = self.throttle.record(email, result.is_ok()).await
        {
            // Tell the owner (by a queued mail); the answer does not wait on it or fail by it.
            if let Err(error) = self.notify_account_locked(email, locked_for).await {
                tracing::warn!(%error, "queueing the account lock notification failed");
            }
        }
        result
    }

    /// The password check of a sign-in, then [`Self::finish_login`].
    async fn check_password_and_finish(
        &self,
        email: &str,
        password: &str,
        previous_session: Option<&SecretToken>,
        device: &SecretHash,
        from_address: &str,
    ) -> Result<LoginOutcome, Error> {
        let Ok(password) = PasswordPlain::parse_offered(password) else {
            return Err(Error::InvalidCredentials);
        };
        let account = match Email::parse(email) {
            Ok(email) => self.store.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(account) = account else {
            self.hasher.verify_dummy(&password).await?;
            return Err(Error::InvalidCredentials);
        };
        if account.user.guest || !PasswordHasher::is_hash(&account.password_hash) {
            // Guests and external-only accounts have no password; answer after the same work
            // as for anyone else.
            self.hasher.verify_dummy(&password).await?;
            return Err(Error::InvalidCredentials);
        }
        let matches = self.hasher.verify(&password, &account.password_hash).await?;
        if !matches || account.user.disabled {
            return Err(Error::InvalidCredentials);
        }
        self.finish_login(account.user, previous_session, device, from_address).await
    }

    /// Whether the `login_challenges` flag (on unless defined otherwise) challenges `user`.
    fn challenges_on_for(&self, user: &User) -> bool {
        let Some(flags) = &self.flags else { return true };
        let context = crate::flags::FlagContext {
            user_id: Some(user.id),
            role: Some(user.role),
            guest: user.guest,
            ..crate::flags::FlagContext::default()
        };
        flags.is_enabled(crate::flags::known::LOGIN_CHALLENGES, &context, true)
    }

    /// The end of every successful sign-in (password or external provider): a challenged role on
    /// a device it never confirmed gets a mailed confirmation link instead of a session;
    /// otherwise the browser's previous session ends and a new one starts.
    pub(super) async fn finish_login(
        &self,
        user: User,
        previous_session: Option<&SecretToken>,
        device: &SecretHash,
        from_address: &str,
    ) -> Result<LoginOutcome, Error> {
        let now = self.clock.now();
        let user_id = user.id;
        // Only challenged roles keep known devices (added by confirmed challenges), so the
        // table grows with confirmations, not with every cookie-less client's login.
        if self.settings.login_challenge_roles.contains(&user.role)
            && self.challenges_on_for(&user)
            && !self.store.touch_known_device(user_id, device, now).await?
        {
            return Ok(LoginOutcome::Challenged(ChallengeRequired {
                user_id,
                email: user.email,
                device_hash: *device,
                from_address: from_address.to_owned(),
            }));
        }
        if let Some(previous) = previous_session {
            // A new id at login: any session the browser already had is ended, not reused.
            if let Some((session, previous_user)) = self.store.find_session(&previous.hash()).await? {
                self.store.delete_session(session.id).await?;
                // A guest signing in to an account brings the guest's cart along.
                if previous_user.guest && previous_user.id != user_id {
                    let (lines, quantity) = (crate::orders::MAX_CART_LINES, crate::orders::MAX_LINE_QUANTITY);
                    self.store.merge_cart(previous_user.id, user_id, lines, quantity, now).await?;
                }
            }
        }
        self.start_session(user).await.map(LoginOutcome::SignedIn)
    }

    /// Queues the mail confirming a held sign-in (one pending per account and device).
    pub async fn send_login_challenge(&self, challenge: &ChallengeRequired) -> Result<(), Error> {
        let user_id = challenge.user_id;
        let device_hex = hex::encode(challenge.device_hash.0);
        let payload = super::SendLoginChallengeJob {
            user_id,
            device_hash: device_hex.clone(),
            from_address: Some(challenge.from_address.clone()),
        };
        let job = crate::jobs::NewJob::of(&payload, self.clock.now())
            .queue(crate::mail::MAIL_QUEUE)
            .max_attempts(12)
            .unique_key(format!("{}:{user_id}:{device_hex}", <super::SendLoginChallengeJob as JobPayload>::KIND));
        if self.store.enqueue_job(&job).await? {
            tracing::info!(userId = %user_id, "sign-in from an unknown device held for confirmation by mail");
        }
        Ok(())
    }

    pub(super) async fn start_session(&self, user: User) -> Result<SignedIn, Error> {
        let now = self.clock.now();
        let session_token = SecretToken::generate("");
        let expires_at = now + self.settings.session_absolute_ttl;
        let session = NewSession {
            id: crate::new_id(),
            token_hash: session_token.hash(),
            user_id: user.id,
            created_at: now,
            expires_at,
        };
        self.store.insert_session(&session).await?;
        Ok(SignedIn { user, session_token, expires_at, lifetime: self.settings.session_absolute_ttl })
    }

    /// The caller behind a session secret, or `None` when it is unknown, expired or its user disabled.
    pub async fn authenticate_session(&self, token: &SecretToken) -> Result<Option<Caller>, Error> {
        let hash = token.hash();
        let found = self.caches.sessions.get_or_load(hash, Option::is_none, || self.store.find_session(&hash));
        let Some((session, user)) = found.await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let idle_ttl = if user.guest { self.settings.guest_idle_ttl } else { self.settings.session_idle_ttl };
        let idle_deadline = session.last_seen_at + idle_ttl;
        if now >= session.expires_at || now >= idle_deadline || user.disabled {
            self.store.delete_session(session.id).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= TOUCH_INTERVAL {
            self.store.touch_session(session.id, now).await?;
            // The cached copy would ask for a touch on every request until it expires.
            self.caches.sessions.invalidate(hash).await;
        }
        Ok(Some(Caller { user, method: AuthMethod::Session { session_id: session.id } }))
    }

    /// The caller behind an API token secret, or `None` when it is unknown, expired or its user disabled.
    pub async fn authenticate_api_token(&self, token: &SecretToken) -> Result<Option<Caller>, Error> {
        let hash = token.hash();
        let found = self.caches.api_tokens.get_or_load(hash, Option::is_none, || self.store.find_api_token(&hash));
        let Some((api_token, user)) = found.await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if api_token.expires_at.is_some_and(|expires_at| now >= expires_at) || user.disabled {
            return Ok(None);
        }
        if api_token.last_used_at.is_none_or(|last| now - last >= TOUCH_INTERVAL) {
            self.store.touch_api_token(api_token.id, now).await?;
            self.caches.api_tokens.invalidate(hash).await;
        }
        Ok(Some(Caller { user, method: AuthMethod::ApiToken { token_id: api_token.id } }))
    }

    /// Ends the caller's session. Callers using an API token have no session to end.
    pub async fn log_out(&self, caller: &Caller) -> Result<(), Error> {
        match caller.method {
            AuthMethod::Session { session_id } => Ok(self.store.delete_session(session_id).await?),
            AuthMethod::ApiToken { .. } => Err(Error::Invalid(ValidationErrors::single(
                "authorization",
                "this request is authenticated with an API token, not a session; revoke the token instead",
            ))),
        }
    }

    /// Changes the caller's own name and/or password. A password change needs the current
    /// password and ends every other session of the account.
    pub async fn update_me(
        &self,
        caller: &Caller,
        name: Option<PersonName>,
        password_change: Option<(PasswordPlain, PasswordPlain)>,
    ) -> Result<User, Error> {
        let mut changes = UserChanges { name, ..UserChanges::default() };
        if let Some((current, new)) = &password_change {
            let account = self.store.find_user_with_password(caller.user.id).await?.ok_or(Error::NotFound)?;
            if !self.hasher.verify(current, &account.password_hash).await? {
                return Err(Error::Invalid(ValidationErrors::single("currentPassword", "is incorrect")));
            }
            changes.password_hash = Some(self.hasher.hash(new).await?);
        }
        let user = self.store.update_user(caller.user.id, &changes, self.clock.now()).await?;
        if password_change.is_some() {
            let keep = match caller.method {
                AuthMethod::Session { session_id } => Some(session_id),
                AuthMethod::ApiToken { .. } => None,
            };
            self.store.delete_user_sessions(user.id, keep).await?;
        }
        Ok(user)
    }

    /// Creates a personal API token for the caller.
    pub async fn create_api_token(
        &self,
        caller: &Caller,
        name: String,
        expires_in: Option<Duration>,
    ) -> Result<NewApiToken, Error> {
        let existing = self.store.list_api_tokens(caller.user.id).await?;
        if existing.len() >= MAX_API_TOKENS_PER_USER {
            return Err(Error::Conflict(format!(
                "a user may hold at most {MAX_API_TOKENS_PER_USER} API tokens; revoke one first"
            )));
        }
        let now = self.clock.now();
        let secret = SecretToken::generate(API_TOKEN_PREFIX);
        let record = NewApiTokenRecord {
            id: crate::new_id(),
            user_id: caller.user.id,
            name,
            token_hash: secret.hash(),
            created_at: now,
            expires_at: expires_in.map(|ttl| now + ttl),
        };
        let token = self.store.insert_api_token(&record).await?;
        Ok(NewApiToken { token, secret })
    }

    pub async fn list_api_tokens(&self, caller: &Caller) -> Result<Vec<ApiToken>, Error> {
        Ok(self.store.list_api_tokens(caller.user.id).await?)
    }

    /// Revokes one of the caller's tokens; another user's token is "not found".
    pub async fn revoke_api_token(&self, caller: &Caller, token_id: Uuid) -> Result<(), Error> {
        Ok(self.store.delete_api_token(caller.user.id, token_id).await?)
    }

    pub async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, Error> {
        Ok(self.store.list_users(query).await?)
    }

    pub async fn get_user(&self, id: Uuid) -> Result<User, Error> {
        self.store.find_user(id).await?.ok_or(Error::NotFound)
    }

    /// An admin changes a user's role or disables the account. Disabling ends its sessions.
    /// Admins cannot demote or disable themselves, so a shop never loses its last admin by accident.
    pub async fn admin_update_user(
        &self,
        admin: &Caller,
        user_id: Uuid,
        role: Option<Role>,
        disabled: Option<bool>,
    ) -> Result<User, Error> {
        if admin.user.id == user_id && (role.is_some_and(|r| r != Role::Admin) || disabled == Some(true)) {
            return Err(Error::Conflict("administrators cannot demote or disable their own account".into()));
        }
        let changes = UserChanges { role, disabled, ..UserChanges::default() };
        let user = self.store.update_user(user_id, &changes, self.clock.now()).await?;
        if user.disabled {
            self.store.delete_user_sessions(user.id, None).await?;
        }
        Ok(user)
    }

    /// An operator's view of a user's sessions, most recently seen first (at most 100).
    pub async fn user_sessions(&self, user_id: Uuid) -> Result<Vec<Session>, Error> {
        self.store.find_user(user_id).await?.ok_or(Error::NotFound)?;
        Ok(self.store.list_user_sessions(user_id, 100).await?)
    }

    /// An operator signs a user out everywhere: every session ends (audited with the change);
    /// this instance's cached sign-ins at once, other instances' within the cache's staleness
    /// bound. Answers how many ended.
    pub async fn end_user_sessions(&self, user_id: Uuid, audit: &crate::audit::AuditContext) -> Result<u64, Error> {
        self.store.find_user(user_id).await?.ok_or(Error::NotFound)?;
        let ended = self.store.end_user_sessions(user_id, audit).await?;
        tracing::warn!(userId = %user_id, ended, actor = audit.actor.as_str(), "sessions ended by an operator");
        Ok(ended)
    }

    /// Tells the owner of `email` (if there is such an account) that it was locked after failed
    /// logins, by enqueueing a mail. One mail per account per lock: the job's unique key names
    /// the account and the lock's end, so instances noticing the same lock do not both mail.
    /// Returns whether a mail was enqueued.
    async fn notify_account_locked(&self, email: &str, locked_for: std::time::Duration) -> Result<bool, Error> {
        let locked_until = self.clock.now() + locked_for;
        let Ok(email) = Email::parse(email) else { return Ok(false) };
        let Some(found) = self.store.find_user_by_email(&email).await? else { return Ok(false) };
        let user = found.user;
        if user.disabled || user.guest {
            return Ok(false);
        }
        let mail = crate::mail::account_locked(&user.email, user.name.as_str(), locked_until, &self.settings.shop_name);
        let key = format!("account-locked:{}:{}", user.id, locked_until.unix_timestamp() / 60);
        let job = crate::mail::send_mail_job(&mail, Some(key), self.clock.now());
        let enqueued = self.store.enqueue_job(&job).await?;
        if enqueued {
            tracing::info!(userId = %user.id, "account lock notification queued");
        }
        Ok(enqueued)
    }

    /// Prepares the password hasher (see [`PasswordHasher::warm_up`]).
    pub async fn warm_up(&self) -> Result<(), Error> {
        Ok(self.hasher.warm_up().await?)
    }

    /// Deletes at most `limit` sessions past their absolute or idle expiry; returns how many went.
    pub async fn purge_expired_sessions(&self, limit: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        Ok(self.store.delete_expired_sessions(now, now - self.settings.session_idle_ttl, limit).await?)
    }
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService").field("settings", &self.settings).finish_non_exhaustive()
    }
}
