//! The OpenID Connect relying party behind [`shop::ports::IdentityProvider`]: discovery, the
//! authorization code flow with PKCE (S256), `state` and `nonce`, and ID token verification
//! against the issuer's published keys (signature, issuer, audience, expiry, nonce, access token
//! hash), using the `openidconnect` crate for the protocol.
//!
//! Every request to the provider goes through an [`integration::IntegrationClient`]: connect,
//! attempt and total timeouts, a bulkhead, a circuit breaker named `oidc-{provider}`, retries
//! for GETs only, and redirects never followed (a redirect is an answer, not an instruction).
//! The discovery document and key set are cached for `metadata_ttl`; one caller refreshes them
//! while the others keep using the cached copy (no dogpile); a failed refresh keeps the stale
//! copy in service for up to a day and keeps callers off the provider for a few seconds; an ID
//! token signed with a key the cache does not know forces an early refresh (key rotation), at
//! most once a minute, which never falls back to the copy without the key.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    SubjectIdentifier, TokenResponse as _,
};
use resilience::{CircuitBreaker, Clock, Idempotency};
use shop::accounts::{AuthorizationRequest, Email, ExternalLoginError, ExternalProfile};
use shop::ports::IdentityProvider;
use tokio::sync::{Mutex, RwLock};

/// One configured provider.
#[derive(Clone)]
pub struct OidcConfig {
    /// Our name for it, as in `/auth/oidc/{name}/start`.
    pub name: String,
    /// The issuer identifier; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// For `client_secret_basic`; `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// Our callback, exactly as registered with the provider.
    pub redirect_url: String,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
    /// How long discovery and keys are cached.
    pub metadata_ttl: Duration,
    /// Timeouts, bulkhead and breaker of the calls to the provider.
    pub http: IntegrationConfig,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("metadata_ttl", &self.metadata_ttl)
            .finish_non_exhaustive()
    }
}

/// Why a provider cannot be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    #[error("oidc provider {name}: {field} {problem}")]
    Invalid { name: String, field: &'static str, problem: String },
    #[error(transparent)]
    Client(#[from] IntegrationError),
}

/// A client made from discovered metadata: authorization and token endpoints set, userinfo
/// and JWKS as the provider declared them.
type DiscoveredClient = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// Cached provider metadata (with its key set) and when it was fetched.
#[derive(Clone)]
struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// The cache and when a refresh last failed.
#[derive(Default)]
struct CacheState {
    cached: Option<Cached>,
    last_failure: Option<Instant>,
}

/// An OpenID Connect provider.
pub struct OidcProvider {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: IntegrationClient,
    clock: Arc<dyn Clock>,
    cache: RwLock<CacheState>,
    /// Held by the one caller refreshing the cache.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A forced refresh (unknown signing key) happens at most this often.
const MIN_FORCED_REFRESH: Duration = Duration::from_secs(60);
/// After a failed refresh, the provider is not asked again for this long (callers get the
/// stale copy, or a fast 503 without one), so waiting callers do not each try in turn.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// A stale copy serves while refreshes fail for at most this long; after that the keys may
/// have been revoked, and sign-ins fail (503) until the provider answers.
const MAX_STALENESS: Duration = Duration::from_secs(24 * 3_600);

impl OidcProvider {
    /// Checks the configuration and builds the HTTP client. Nothing is fetched yet: a provider
    /// that is down at startup only makes its own sign-ins fail (503) until it is back.
    pub fn new(config: OidcConfig, clock: Arc<dyn Clock>) -> Result<Self, OidcConfigError> {
        let invalid = |field: &'static str, problem: String| OidcConfigError::Invalid {
            name: config.name.clone(),
            field,
            problem,
        };
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|error| invalid("issuer", error.to_string()))?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|error| invalid("redirect_url", error.to_string()))?;
        let http = IntegrationClient::new(config.http.clone(), Arc::clone(&clock))?;
        Ok(Self {
            config,
            issuer,
            redirect,
            http,
            clock,
            cache: RwLock::new(CacheState::default()),
            refreshing: Mutex::new(()),
        })
    }

    /// The breaker guarding calls to this provider (for the status page).
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        self.http.breaker()
    }

    /// The provider's metadata and keys: the cached copy while younger than the TTL (for a
    /// forced refresh — a token signed with an unknown key — younger than a minute); otherwise
    /// refreshed by one caller while the others keep using the stale copy (or, having none,
    /// wait for that refresh). A failed refresh leaves the stale copy in service for up to
    /// [`MAX_STALENESS`] and keeps everyone off the provider for [`RETRY_AFTER_FAILURE`]. A
    /// forced refresh never falls back to the copy that lacked the key.
    async fn metadata(&self, force: bool) -> Result<CoreProviderMetadata, ExternalLoginError> {
        let limit = if force { MIN_FORCED_REFRESH } else { self.config.metadata_ttl };
        let (fresh, stale, recently_failed) = self.look(limit, force).await;
        if let Some(metadata) = fresh {
            return Ok(metadata);
        }
        if recently_failed {
            return stale.ok_or_else(|| ExternalLoginError::Unavailable("the provider failed moments ago".into()));
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => match stale {
                Some(metadata) => return Ok(metadata),
                None => self.refreshing.lock().await,
            },
        };
        // Whoever held the lock before may have refreshed it (or failed) meanwhile.
        let (fresh, stale, recently_failed) = self.look(limit, force).await;
        if let Some(metadata) = fresh {
            return Ok(metadata);
        }
        if recently_failed {
            return stale.ok_or_else(|| ExternalLoginError::Unavailable("the provider failed moments ago".into()));
        }
        match self.discover().await {
            Ok(metadata) => {
                let fetched = self.clock.now();
                *self.cache.write().await =
                    CacheState { cached: Some(Cached { metadata: metadata.clone(), fetched }), last_failure: None };
                tracing::info!(provider = self.config.name.as_str(), "oidc discovery and keys refreshed");
                Ok(metadata)
            }
            Err(error) => {
                self.cache.write().await.last_failure = Some(self.clock.now());
                match stale {
                    Some(metadata) => {
                        tracing::warn!(provider = self.config.name.as_str(), %error, "oidc refresh failed; using the cached metadata");
                        Ok(metadata)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// The cache as seen now: a copy younger than `limit`, a stale copy still allowed to
    /// serve (never for a forced refresh), and whether a refresh failed moments ago.
    async fn look(
        &self,
        limit: Duration,
        force: bool,
    ) -> (Option<CoreProviderMetadata>, Option<CoreProviderMetadata>, bool) {
        let now = self.clock.now();
        let state = self.cache.read().await;
        let age = |cached: &Cached| now.saturating_duration_since(cached.fetched);
        let fresh = state.cached.as_ref().filter(|cached| age(cached) < limit).map(|cached| cached.metadata.clone());
        let stale = state
            .cached
            .as_ref()
            .filter(|cached| !force && age(cached) < MAX_STALENESS)
            .map(|cached| cached.metadata.clone());
        let recently_failed =
            state.last_failure.is_some_and(|failed| now.saturating_duration_since(failed) < RETRY_AFTER_FAILURE);
        (fresh, stale, recently_failed)
    }

    async fn discover(&self) -> Result<CoreProviderMetadata, ExternalLoginError> {
        let http = Http(self);
        CoreProviderMetadata::discover_async(self.issuer.clone(), &http)
            .await
            .map_err(|error| ExternalLoginError::Unavailable(format!("discovery failed: {}", error_chain(&error))))
    }

    fn client(&self, metadata: CoreProviderMetadata) -> DiscoveredClient {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// The HTTP client handed to `openidconnect`: our integration client, with the provider's
    /// absolute URLs. Only GETs (discovery, keys, userinfo) are retried.
    async fn call(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, IntegrationError> {
        let (parts, body) = request.into_parts();
        let idempotency =
            if parts.method == http::Method::GET { Idempotency::Idempotent } else { Idempotency::NotIdempotent };
        let outbound = OutboundRequest {
            method: parts.method,
            path: parts.uri.to_string(),
            headers: parts.headers,
            body: (!body.is_empty()).then(|| bytes::Bytes::from(body)),
            idempotency,
            trace_id: None,
        };
        let answer = self.http.send(outbound).await?;
        let mut response = http::Response::new(answer.body.to_vec());
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        Ok(response)
    }

    async fn verified_profile(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<ExternalProfile, ExternalLoginError> {
        let http = Http(self);
        let mut client = self.client(self.metadata(false).await?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|error| ExternalLoginError::Unavailable(format!("the provider has no token endpoint: {error}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|error| match error {
                openidconnect::RequestTokenError::ServerResponse(response) => {
                    ExternalLoginError::Rejected(format!("the provider refused the code: {response}"))
                }
                other => ExternalLoginError::Unavailable(format!("token request failed: {}", error_chain(&other))),
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| ExternalLoginError::Rejected("the token response has no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let first_try = id_token.claims(&client.id_token_verifier(), &nonce).cloned();
        let claims = match first_try {
            Ok(claims) => claims,
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // The provider may have rotated its keys since we cached them.
                tracing::info!(
                    provider = self.config.name.as_str(),
                    "ID token signed with an unknown key; refreshing keys"
                );
                client = self.client(self.metadata(true).await?);
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|error| ExternalLoginError::Rejected(format!("ID token: {error}")))?
                    .clone()
            }
            Err(error) => return Err(ExternalLoginError::Rejected(format!("ID token: {error}"))),
        };
        if let Some(expected) = claims.access_token_hash() {
            let signing_alg =
                id_token.signing_alg().map_err(|error| ExternalLoginError::Rejected(error.to_string()))?;
            let verifier = client.id_token_verifier();
            let key =
                id_token.signing_key(&verifier).map_err(|error| ExternalLoginError::Rejected(error.to_string()))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), signing_alg, key)
                .map_err(|error| ExternalLoginError::Rejected(error.to_string()))?;
            if actual != *expected {
                return Err(ExternalLoginError::Rejected("the access token does not match the ID token".into()));
            }
        }
        let subject = claims.subject().as_str().to_owned();
        if subject.is_empty() || subject.len() > shop::accounts::MAX_SUBJECT_LEN {
            return Err(ExternalLoginError::Rejected(format!("the subject is {} bytes long", subject.len())));
        }
        let issuer = claims.issuer().as_str().to_owned();
        if issuer.len() > shop::accounts::MAX_ISSUER_LEN {
            return Err(ExternalLoginError::Rejected("the issuer is too long".into()));
        }
        let mut email = claims.email().map(|email| email.as_str().to_owned());
        let mut email_verified = claims.email_verified().unwrap_or(false);
        let mut name = claims.name().and_then(|name| name.get(None)).map(|name| name.as_str().to_owned());
        if email.is_none() && client.user_info_url().is_some() {
            // Providers following the spec to the letter put profile claims at userinfo only.
            let info: CoreUserInfoClaims = client
                .user_info(tokens.access_token().clone(), Some(SubjectIdentifier::new(subject.clone())))
                .map_err(|error| ExternalLoginError::Unavailable(error.to_string()))?
                .request_async(&http)
                .await
                .map_err(|error| match error {
                    openidconnect::UserInfoError::ClaimsVerification(error) => {
                        ExternalLoginError::Rejected(format!("userinfo: {error}"))
                    }
                    other => {
                        ExternalLoginError::Unavailable(format!("userinfo request failed: {}", error_chain(&other)))
                    }
                })?;
            email = info.email().map(|email| email.as_str().to_owned());
            email_verified = info.email_verified().unwrap_or(false);
            name = name.or_else(|| info.name().and_then(|name| name.get(None)).map(|name| name.as_str().to_owned()));
        }
        let email = match email {
            Some(raw) => match Email::parse(&raw) {
                Ok(email) => Some(email),
                Err(problem) => {
                    tracing::warn!(
                        provider = self.config.name.as_str(),
                        problem,
                        "the provider's email address is unusable"
                    );
                    None
                }
            },
            None => None,
        };
        Ok(ExternalProfile { provider: self.config.name.clone(), issuer, subject, email, email_verified, name })
    }
}

#[async_trait]
impl IdentityProvider for OidcProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn authorization_request(&self) -> Result<AuthorizationRequest, ExternalLoginError> {
        let client = self.client(self.metadata(false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(AuthorizationRequest {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    async fn complete(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        issuer: Option<&str>,
    ) -> Result<ExternalProfile, ExternalLoginError> {
        // RFC 9207: compared exactly, before the code goes anywhere.
        if issuer.is_some_and(|issuer| issuer != self.issuer.as_str()) {
            return Err(ExternalLoginError::Rejected("the callback names another issuer (mix-up)".into()));
        }
        self.verified_profile(code, pkce_verifier, nonce).await
    }
}

/// The HTTP client handed to `openidconnect` (see [`OidcProvider::call`]).
struct Http<'a>(&'a OidcProvider);

type HttpFuture<'c> = Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, IntegrationError>> + Send + 'c>>;

impl<'c> openidconnect::AsyncHttpClient<'c> for Http<'_> {
    type Error = IntegrationError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// An error with its sources, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
