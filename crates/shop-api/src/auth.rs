//! Authentication (session cookie or bearer API token), the Origin check for cookie-authenticated
//! writes, and default-deny authorization driven by each route's declared `security`.
//!
//! Every route declares who may call it in its `#[utoipa::path(security(...))]`: `security(())`
//! for anyone, or `("session" = ["staff"]), ("apiToken" = ["staff"])` for a minimum role. The
//! [`authorize`] middleware reads those declarations from the OpenAPI document; a route that
//! declares nothing is refused to everyone. The document clients read is the policy enforced.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use shop::accounts::{Caller, Role};
use shop::secrets::SecretToken;

use crate::error::ApiError;
use crate::middleware::observe::RequestContext;
use crate::state::AppState;

/// The session cookie's name over plain HTTP (development).
pub const SESSION_COOKIE: &str = "shopkeep_session";
/// The long-lived, random id of a browser, by which sign-ins from new devices are noticed.
pub const DEVICE_COOKIE: &str = "shopkeep_device";
pub const SECURE_DEVICE_COOKIE: &str = "__Host-shopkeep_device";
/// Holds the handle of an external (OpenID Connect) sign-in between the redirect to the
/// provider and its callback, so only the browser that started it can complete it.
pub const EXTERNAL_LOGIN_COOKIE: &str = "shopkeep_oidc";
pub const SECURE_EXTERNAL_LOGIN_COOKIE: &str = "__Host-shopkeep_oidc";
/// The session cookie's name over HTTPS: the `__Host-` prefix pins it to this host, path `/`, `Secure`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-shopkeep_session";

/// Who is calling, as established by [`authenticate`]; `None` for anonymous requests.
#[derive(Clone, Debug, Default)]
pub struct CurrentCaller(pub Option<Caller>);

/// The session secret the request presented in its cookie, if any (used to rotate it at login).
#[derive(Clone, Debug)]
pub struct PresentedSession(pub SecretToken);

/// Resolves the caller from `Authorization: Bearer` or the session cookie.
pub(crate) async fn authenticate(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let settings = state.settings();
    let bearer = bearer_token(request.headers());
    let session = session_cookie(request.headers(), settings.https);
    let caller = if let Some(raw) = bearer {
        let token =
            SecretToken::from_presented(&raw).ok_or(ApiError::Unauthenticated("the bearer token is not valid"))?;
        let caller = state.accounts().authenticate_api_token(&token).await?;
        Some(caller.ok_or(ApiError::Unauthenticated("the bearer token is not valid"))?)
    } else if let Some(raw) = session {
        if is_unsafe(request.method()) && !origin_allowed(request.headers(), &settings.allowed_origins, settings.https)
        {
            return Err(ApiError::Forbidden("cross-origin request refused: the Origin is not allowed"));
        }
        match SecretToken::from_presented(&raw) {
            Some(token) => {
                let caller = state.accounts().authenticate_session(&token).await?;
                request.extensions_mut().insert(PresentedSession(token));
                caller
            }
            None => None,
        }
    } else {
        None
    };
    if let (Some(caller), Some(context)) = (&caller, request.extensions().get::<Arc<RequestContext>>()) {
        context.set_user_id(caller.user.id);
    }
    request.extensions_mut().insert(CurrentCaller(caller));
    Ok(())
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn session_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    let name = if https { SECURE_SESSION_COOKIE } else { SESSION_COOKIE };
    cookie(headers, name)
}

/// The device cookie's value, if the browser sent one.
pub(crate) fn device_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    cookie(headers, if https { SECURE_DEVICE_COOKIE } else { DEVICE_COOKIE })
}

/// The external sign-in handle's cookie value, if the browser sent one.
pub(crate) fn external_login_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    cookie(headers, if https { SECURE_EXTERNAL_LOGIN_COOKIE } else { EXTERNAL_LOGIN_COOKIE })
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// A cookie-authenticated write is allowed when its `Origin` is this very site (scheme and host)
/// or an allowed origin. Without `Origin` (not a browser, or an old one),
/// `Sec-Fetch-Site: cross-site` is refused.
fn origin_allowed(headers: &HeaderMap, allowed: &[String], https: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        let fetch_site = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok());
        return fetch_site != Some("cross-site");
    };
    if allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let scheme = if https { "https" } else { "http" };
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    host.is_some_and(|host| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

/// Who may call one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    AtLeast(Role),
}

/// The access rule of every documented operation, keyed by method and path template; `None`
/// for an operation that declares no `security` (refused to everyone).
#[derive(Debug, Default)]
pub struct Policies {
    operations: HashMap<(Method, String), Option<Access>>,
    /// The documented methods of each path, for `Allow` on 405 answers.
    methods: HashMap<String, Vec<Method>>,
}

/// What the policies say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Declared(Access),
    /// The operation exists but declares no access: refused.
    Undeclared,
    /// The path is documented, but not for this method: 405 with these methods in `Allow`.
    MethodNotAllowed(Vec<Method>),
}

impl Policies {
    /// Reads each operation's `security` from the OpenAPI document. An empty requirement
    /// (`security(())`) means anyone; otherwise the scopes name the minimum role.
    pub fn from_document(document: &serde_json::Value) -> Result<Self, String> {
        let mut policies = Self::default();
        let paths = document.get("paths").and_then(|paths| paths.as_object()).cloned().unwrap_or_default();
        for (path, item) in paths {
            let Some(operations) = item.as_object() else { continue };
            for (method, operation) in operations {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else { continue };
                let access = match operation.get("security").and_then(|s| s.as_array()) {
                    Some(requirements) => {
                        Some(access_of(requirements).map_err(|error| format!("{method} {path}: {error}"))?)
                    }
                    None => None,
                };
                policies.methods.entry(path.clone()).or_default().push(method.clone());
                policies.operations.insert((method, path.clone()), access);
            }
        }
        Ok(policies)
    }

    pub fn decide(&self, method: &Method, path: &str) -> Decision {
        // HEAD is answered by GET handlers and follows their rule.
        let method = if method == Method::HEAD { &Method::GET } else { method };
        match self.operations.get(&(method.clone(), path.to_owned())) {
            Some(Some(access)) => Decision::Declared(*access),
            Some(None) => Decision::Undeclared,
            // Undocumented methods never reach a handler, even one added without documentation.
            None => match self.methods.get(path) {
                Some(methods) => Decision::MethodNotAllowed(methods.clone()),
                None => Decision::Undeclared,
            },
        }
    }
}

/// Every scheme of an operation must name the same single role: the rule does not depend on
/// how the caller authenticated.
fn access_of(requirements: &[serde_json::Value]) -> Result<Access, String> {
    if requirements.iter().any(|requirement| requirement.as_object().is_some_and(|r| r.is_empty())) {
        return Ok(Access::Anyone);
    }
    let mut role: Option<Role> = None;
    for requirement in requirements {
        for scopes in requirement.as_object().into_iter().flat_map(|r| r.values()) {
            let scopes = scopes.as_array().map(Vec::as_slice).unwrap_or_default();
            let [scope] = scopes else { return Err("each scheme must name exactly one role".into()) };
            let named = scope.as_str().map(Role::parse).transpose()?.ok_or("a scope is not a string")?;
            if role.is_some_and(|role| role != named) {
                return Err("every scheme must name the same role".into());
            }
            role = Some(named);
        }
    }
    role.map(Access::AtLeast).ok_or_else(|| "security names no role".to_owned())
}

/// Refuses the request unless the matched route's declared access admits the caller.
pub async fn authorize(
    State(policies): State<Arc<Policies>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = matched.as_ref().map(MatchedPath::as_str).unwrap_or_default();
    let caller = request.extensions().get::<CurrentCaller>().and_then(|current| current.0.as_ref());
    match policies.decide(request.method(), path) {
        Decision::Declared(Access::Anyone) => {}
        Decision::MethodNotAllowed(mut methods) => {
            if methods.contains(&Method::GET) {
                methods.push(Method::HEAD);
            }
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut response = axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
            if let Ok(value) = axum::http::HeaderValue::from_str(&allow.join(",")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Ok(response);
        }
        Decision::Declared(Access::AtLeast(role)) => match caller {
            None => return Err(ApiError::Unauthenticated("sign in, or send an API token")),
            Some(caller) if !caller.has_role(role) => {
                return Err(ApiError::Forbidden("your role does not allow this"));
            }
            Some(_) => {}
        },
        Decision::Undeclared => {
            tracing::error!(method = %request.method(), route = path, "route declares no access policy; refused");
            return Err(ApiError::Forbidden("this route is not open to anyone"));
        }
    }
    Ok(next.run(request).await)
}

/// The signed-in caller; only on routes whose policy requires one (else a 401 earlier).
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CurrentCaller>()
            .and_then(|current| current.0.clone())
            .map(Self)
            .ok_or(ApiError::Unauthenticated("sign in, or send an API token"))
    }
}

/// The caller if signed in, for public routes that show more to staff.
pub struct MaybeAuthenticated(pub Option<Caller>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuthenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<CurrentCaller>().and_then(|current| current.0.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn origin_check() {
        let allowed = vec!["https://shop.example".to_owned()];
        assert!(origin_allowed(&headers(&[("origin", "https://shop.example")]), &allowed, false));
        let same_site = headers(&[("origin", "http://localhost:8080"), ("host", "localhost:8080")]);
        assert!(origin_allowed(&same_site, &allowed, false));
        assert!(!origin_allowed(&same_site, &allowed, true), "plain http origin on an https shop");
        let https_site = headers(&[("origin", "https://shop.test"), ("host", "shop.test")]);
        assert!(origin_allowed(&https_site, &allowed, true));
        assert!(!origin_allowed(
            &headers(&[("origin", "https://evil.example"), ("host", "localhost:8080")]),
            &allowed,
            false
        ));
        assert!(origin_allowed(&headers(&[]), &allowed, false), "non-browser clients send no Origin");
        assert!(!origin_allowed(&headers(&[("sec-fetch-site", "cross-site")]), &allowed, false));
    }

    #[test]
    fn cookies_and_bearer_tokens_are_found() {
        let map = headers(&[("cookie", "a=b; shopkeep_session=secret; c=d")]);
        assert_eq!(session_cookie(&map, false).as_deref(), Some("secret"));
        assert_eq!(session_cookie(&map, true), None);
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer skp_x")])).as_deref(), Some("skp_x"));
        assert_eq!(bearer_token(&headers(&[("authorization", "Basic abc")])), None);
    }

    #[test]
    fn access_is_read_from_security_requirements() {
        let anyone = serde_json::json!([{}]);
        let staff = serde_json::json!([{"session": ["staff"]}, {"apiToken": ["staff"]}]);
        assert_eq!(access_of(anyone.as_array().map(Vec::as_slice).unwrap_or_default()), Ok(Access::Anyone));
        assert_eq!(
            access_of(staff.as_array().map(Vec::as_slice).unwrap_or_default()),
            Ok(Access::AtLeast(Role::Staff))
        );
        assert!(access_of(&[serde_json::json!({"session": ["root"]})]).is_err());
        let mixed = serde_json::json!([{"session": ["admin"]}, {"apiToken": ["staff"]}]);
        assert!(access_of(mixed.as_array().map(Vec::as_slice).unwrap_or_default()).is_err());
    }
}
