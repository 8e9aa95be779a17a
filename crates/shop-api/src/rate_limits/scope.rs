//! The rate-limit scopes: every limit by name, with its default quota, in one table that the
//! configuration, the limiters, the idle-key purge, the admin status page and the metrics read.

use std::time::Duration;

use resilience::Quota;

/// One limit: what it counts and whom it counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitScope {
    /// Every request from one client address.
    PerIp,
    /// Requests without a signed-in user, per client address.
    Anonymous,
    /// Requests per signed-in customer.
    Customer,
    /// Requests per signed-in staff member or admin.
    Staff,
    /// Requests per API token.
    ApiToken,
    /// Login attempts per client address.
    LoginPerIp,
    /// Sign-ups per client address.
    SignupPerIp,
    /// Requests that send mail (password reset links) per client address…
    MailPerIp,
    /// …and per address they mail to.
    MailPerAccount,
    /// Uses of mailed tokens (reset and verification links) per client address.
    TokenPerIp,
    /// Searches and type-ahead suggestions per client address: they cost the database more
    /// than a plain read.
    SearchPerIp,
}

/// A scope's row in the table: its names and its default quota.
struct Spec {
    /// The key in the `rate_limits` configuration section.
    config_key: &'static str,
    /// The key in the admin status page's `rateLimits`.
    status_key: &'static str,
    /// The `scope` label of `http_requests_rate_limited_total`, also the scope in the shared store.
    label: &'static str,
    count: u32,
    period_secs: u64,
}

impl RateLimitScope {
    /// Every scope, in the order of the configuration, the status page and `config check`.
    pub const ALL: [Self; 11] = [
        Self::PerIp,
        Self::Anonymous,
        Self::Customer,
        Self::Staff,
        Self::ApiToken,
        Self::LoginPerIp,
        Self::SignupPerIp,
        Self::MailPerIp,
        Self::MailPerAccount,
        Self::TokenPerIp,
        Self::SearchPerIp,
    ];

    /// How many scopes there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The table. Label strings are public (dashboards, alerts) and keys persist in Redis:
    /// renaming one is a breaking change.
    const fn spec(self) -> Spec {
        const fn spec(
            config_key: &'static str,
            status_key: &'static str,
            label: &'static str,
            count: u32,
            period_secs: u64,
        ) -> Spec {
            Spec { config_key, status_key, label, count, period_secs }
        }
        match self {
            Self::PerIp => spec("per_ip", "perIp", "ip", 600, 60),
            Self::Anonymous => spec("anonymous", "anonymous", "anonymous", 300, 60),
            Self::Customer => spec("customer", "customer", "customer", 600, 60),
            Self::Staff => spec("staff", "staff", "staff", 1_200, 60),
            Self::ApiToken => spec("api_token", "apiToken", "api_token", 1_200, 60),
            Self::LoginPerIp => spec("login_per_ip", "loginPerIp", "login_ip", 10, 60),
            Self::SignupPerIp => spec("signup_per_ip", "signupPerIp", "signup_ip", 20, 3_600),
            Self::MailPerIp => spec("mail_per_ip", "mailPerIp", "mail_ip", 10, 3_600),
            Self::MailPerAccount => spec("mail_per_account", "mailPerAccount", "mail_account", 3, 3_600),
            Self::TokenPerIp => spec("token_per_ip", "tokenPerIp", "token_ip", 10, 60),
            Self::SearchPerIp => spec("search_per_ip", "searchPerIp", "search_ip", 300, 60),
        }
    }

    /// The metric label and shared-store scope: `ip`, `login_ip`, `mail_account`…
    pub const fn as_str(self) -> &'static str {
        self.spec().label
    }

    /// The key in the `rate_limits` configuration section: `per_ip`, `login_per_ip`…
    pub const fn config_key(self) -> &'static str {
        self.spec().config_key
    }

    /// The key in the admin status page: `perIp`, `loginPerIp`…
    pub const fn status_key(self) -> &'static str {
        self.spec().status_key
    }

    /// The scope a configuration key names.
    pub fn from_config_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.config_key() == key)
    }

    /// The quota when none is configured.
    pub fn default_quota(self) -> Quota {
        let spec = self.spec();
        Quota { count: spec.count, period: Duration::from_secs(spec.period_secs) }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RateLimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per scope (a quota, a limiter), indexed by [`RateLimitScope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerScope<T>([T; RateLimitScope::COUNT]);

impl<T> PerScope<T> {
    pub fn from_fn(mut value: impl FnMut(RateLimitScope) -> T) -> Self {
        Self(std::array::from_fn(|index| value(RateLimitScope::ALL[index])))
    }

    /// Each scope with its value, in the order of [`RateLimitScope::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (RateLimitScope, &T)> {
        RateLimitScope::ALL.into_iter().zip(&self.0)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl Default for PerScope<Quota> {
    /// Every scope's default quota.
    fn default() -> Self {
        Self::from_fn(RateLimitScope::default_quota)
    }
}

impl<T> std::ops::Index<RateLimitScope> for PerScope<T> {
    type Output = T;

    fn index(&self, scope: RateLimitScope) -> &T {
        &self.0[scope.index()]
    }
}

impl<T> std::ops::IndexMut<RateLimitScope> for PerScope<T> {
    fn index_mut(&mut self, scope: RateLimitScope) -> &mut T {
        &mut self.0[scope.index()]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn all_lists_every_scope_once_in_declaration_order() {
        // `PerScope` indexes by the discriminant, so ALL must be in declaration order.
        for (index, scope) in RateLimitScope::ALL.into_iter().enumerate() {
            assert_eq!(scope.index(), index, "{scope:?}");
        }
    }

    #[test]
    fn names_are_unique_and_keys_round_trip() {
        for name in [RateLimitScope::config_key, RateLimitScope::status_key, RateLimitScope::as_str] {
            let names: HashSet<_> = RateLimitScope::ALL.into_iter().map(name).collect();
            assert_eq!(names.len(), RateLimitScope::COUNT);
        }
        for scope in RateLimitScope::ALL {
            assert_eq!(RateLimitScope::from_config_key(scope.config_key()), Some(scope));
        }
        assert_eq!(RateLimitScope::from_config_key("lockout_secs"), None);
    }

    #[test]
    fn published_names_do_not_change() {
        // Dashboards and alerts select these labels, Redis holds keys under them, and operators'
        // files use these keys: a rename here is a breaking change, so it must be deliberate.
        let labels = RateLimitScope::ALL.map(RateLimitScope::as_str);
        assert_eq!(
            labels,
            [
                "ip",
                "anonymous",
                "customer",
                "staff",
                "api_token",
                "login_ip",
                "signup_ip",
                "mail_ip",
                "mail_account",
                "token_ip",
                "search_ip"
            ]
        );
        let keys = RateLimitScope::ALL.map(RateLimitScope::config_key);
        assert_eq!(
            keys,
            [
                "per_ip",
                "anonymous",
                "customer",
                "staff",
                "api_token",
                "login_per_ip",
                "signup_per_ip",
                "mail_per_ip",
                "mail_per_account",
                "token_per_ip",
                "search_per_ip"
            ]
        );
    }

    #[test]
    fn per_scope_values_follow_their_scope() {
        let mut quotas = PerScope::<Quota>::default();
        quotas[RateLimitScope::Staff] = Quota::new(7, Duration::from_secs(1));
        assert_eq!(quotas[RateLimitScope::Staff].count, 7);
        assert_eq!(quotas[RateLimitScope::ApiToken], RateLimitScope::ApiToken.default_quota());
        let order: Vec<_> = quotas.iter().map(|(scope, _)| scope).collect();
        assert_eq!(order, RateLimitScope::ALL);
    }
}
