//! Feature flags: definitions (a kill switch, ordered rules, a default), their validation, and
//! evaluation against a request's context — in process, from a snapshot, never failing.
//!
//! A flag is boolean or has string variants. Disabled, it answers its off value (`false`, or its
//! first variant) to everyone. Enabled, the first rule whose conditions all hold gives the value;
//! no rule holding gives the flag's default. Conditions: user ids, roles, an attribute (`country`,
//! `guest`, `staff`) and a percentage rollout bucketed like Unleash's gradual rollout
//! (`murmur3_x86_32("{groupId}:{id}", 0) % 100 + 1 <= percentage`), so raising the percentage
//! keeps everyone already in.

mod service;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::Role;
use crate::validation::ValidationErrors;

pub use service::{FlagService, FlagSnapshot, FlagWrite, follow_flags};

/// The flags the shop itself consults (any other name may be defined and evaluated too).
pub mod known {
    /// `POST /users` (sign-up) open; off closes sign-ups (403). Default on.
    pub const SIGNUPS: &str = "signups";
    /// `POST /guests` and checkout by guests; off makes shoppers sign up first (403). Default on.
    pub const GUEST_CHECKOUT: &str = "guest_checkout";
    /// Typo tolerance in product search; off matches words exactly (and by prefix). Default on.
    pub const FUZZY_SEARCH: &str = "fuzzy_search";
    /// The new-device sign-in challenge for the configured roles; off signs them in directly.
    /// Default on.
    pub const LOGIN_CHALLENGES: &str = "login_challenges";
    /// On: every write of the public API answers 503 with `Retry-After` while reads go on.
    /// Default off.
    pub const MAINTENANCE: &str = "maintenance";

    /// Every flag above.
    pub const ALL: [&str; 5] = [SIGNUPS, GUEST_CHECKOUT, FUZZY_SEARCH, LOGIN_CHALLENGES, MAINTENANCE];
}

/// Most flags a shop may define: the snapshot is evaluated in memory on every request.
pub const MAX_FLAGS: usize = 1000;
const MAX_RULES: usize = 50;
const MAX_CONDITIONS: usize = 10;
const MAX_LIST: usize = 1000;
const MAX_VARIANTS: usize = 20;
const MAX_TEXT: usize = 64;
const MAX_DESCRIPTION: usize = 500;

/// Whether a flag answers `true`/`false` or one of its variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlagKind {
    Boolean,
    Variant,
}

/// What a flag answers: a boolean or a variant's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    Variant(String),
}

/// An attribute of the caller a condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Attribute {
    /// An ISO 3166 alpha-2 code (the shipping country at checkout, or the configured header).
    Country,
    /// `true` for guest accounts and anonymous visitors, `false` for signed-up accounts.
    Guest,
    /// `true` for staff and administrators.
    Staff,
}

/// One test of the caller; a rule holds when all of its conditions do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Condition {
    /// The signed-in user is one of these.
    Users { ids: Vec<Uuid> },
    /// The signed-in user has one of these roles.
    Roles { roles: Vec<String> },
    /// The attribute's value is one of these (case-insensitive).
    Attribute {
        name: Attribute,
        #[serde(rename = "in")]
        values: Vec<String>,
    },
    /// The caller's bucket (1–100, from the user id, else the anonymous id) is at most
    /// `percentage`. `groupId` defaults to the flag's name; flags sharing one roll out to the
    /// same callers.
    #[serde(rename_all = "camelCase")]
    Rollout {
        percentage: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_id: Option<String>,
    },
}

/// When its conditions all hold, the flag answers `then`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub when: Vec<Condition>,
    pub then: FlagValue,
}

/// A flag as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlagDefinition {
    #[serde(default)]
    pub description: String,
    pub kind: FlagKind,
    /// Variant flags only: the names they answer; the first is the off value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
    /// The kill switch: off answers the off value to everyone.
    pub enabled: bool,
    /// Answered when enabled and no rule holds.
    pub default: FlagValue,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A stored flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    pub name: FlagName,
    #[serde(flatten)]
    pub definition: FlagDefinition,
    /// Starts at 1, grows with every change (the `ETag`).
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A flag's name: 1–64 of `a-z 0-9 _ . -`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FlagName(String);

impl FlagName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_start = raw.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let valid_bytes = raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if raw.len() > MAX_TEXT || !valid_start || !valid_bytes {
            return Err("must be 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FlagName {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl From<FlagName> for String {
    fn from(name: FlagName) -> Self {
        name.0
    }
}

impl std::fmt::Display for FlagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FlagDefinition {
    /// Checks every rule of the definition at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.description.chars().count() > MAX_DESCRIPTION {
            errors.add("description", format!("must be at most {MAX_DESCRIPTION} characters"));
        }
        match self.kind {
            FlagKind::Boolean if !self.variants.is_empty() => {
                errors.add("variants", "only variant flags have variants");
            }
            FlagKind::Variant => {
                if self.variants.is_empty() || self.variants.len() > MAX_VARIANTS {
                    errors.add("variants", format!("a variant flag needs 1-{MAX_VARIANTS} variants"));
                }
                let mut seen = HashSet::new();
                for (index, variant) in self.variants.iter().enumerate() {
                    if !valid_word(variant) {
                        errors.add(
                            &format!("variants[{index}]"),
                            "must be 1-64 characters of a-z, A-Z, 0-9, '_', '.', '-'",
                        );
                    } else if !seen.insert(variant.as_str()) {
                        errors.add(&format!("variants[{index}]"), "is listed twice");
                    }
                }
            }
            FlagKind::Boolean => {}
        }
        self.check_value("default", &self.default, &mut errors);
        if self.rules.len() > MAX_RULES {
            errors.add("rules", format!("at most {MAX_RULES} rules"));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let field = format!("rules[{index}]");
            self.check_value(&format!("{field}.then"), &rule.then, &mut errors);
            if rule.when.is_empty() || rule.when.len() > MAX_CONDITIONS {
                errors.add(&format!("{field}.when"), format!("a rule needs 1-{MAX_CONDITIONS} conditions"));
            }
            for (position, condition) in rule.when.iter().enumerate() {
                check_condition(&format!("{field}.when[{position}]"), condition, &mut errors);
            }
        }
        errors.into_result()
    }

    fn check_value(&self, field: &str, value: &FlagValue, errors: &mut ValidationErrors) {
        match (self.kind, value) {
            (FlagKind::Boolean, FlagValue::Bool(_)) => {}
            (FlagKind::Boolean, FlagValue::Variant(_)) => errors.add(field, "a boolean flag answers true or false"),
            (FlagKind::Variant, FlagValue::Variant(name)) if self.variants.contains(name) => {}
            (FlagKind::Variant, _) => errors.add(field, "must be one of the flag's variants"),
        }
    }

    /// What the flag answers when disabled.
    pub fn off_value(&self) -> FlagValue {
        match self.kind {
            FlagKind::Boolean => FlagValue::Bool(false),
            FlagKind::Variant => FlagValue::Variant(self.variants.first().cloned().unwrap_or_default()),
        }
    }
}

fn valid_word(raw: &str) -> bool {
    (1..=MAX_TEXT).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn check_condition(field: &str, condition: &Condition, errors: &mut ValidationErrors) {
    match condition {
        Condition::Users { ids } => {
            if ids.is_empty() || ids.len() > MAX_LIST {
                errors.add(&format!("{field}.ids"), format!("needs 1-{MAX_LIST} user ids"));
            }
        }
        Condition::Roles { roles } => {
            if roles.is_empty() {
                errors.add(&format!("{field}.roles"), "needs at least one role");
            }
            for (index, role) in roles.iter().enumerate() {
                if let Err(problem) = Role::parse(role) {
                    errors.add(&format!("{field}.roles[{index}]"), problem);
                }
            }
        }
        Condition::Attribute { name, values } => {
            if values.is_empty() || values.len() > MAX_LIST {
                errors.add(&format!("{field}.in"), format!("needs 1-{MAX_LIST} values"));
            }
            for (index, value) in values.iter().enumerate() {
                let valid = match name {
                    Attribute::Country => value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()),
                    Attribute::Guest | Attribute::Staff => value == "true" || value == "false",
                };
                if !valid {
                    let expected = match name {
                        Attribute::Country => "must be a two-letter country code",
                        Attribute::Guest | Attribute::Staff => "must be \"true\" or \"false\"",
                    };
                    errors.add(&format!("{field}.in[{index}]"), expected);
                }
            }
        }
        Condition::Rollout { percentage, group_id } => {
            if *percentage > 100 {
                errors.add(&format!("{field}.percentage"), "must be 0-100");
            }
            if group_id.as_deref().is_some_and(|group| !valid_word(group)) {
                errors.add(&format!("{field}.groupId"), "must be 1-64 characters of a-z, A-Z, 0-9, '_', '.', '-'");
            }
        }
    }
}

/// Who is asking, as far as flags care. Built per request by the HTTP layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlagContext<'a> {
    pub user_id: Option<Uuid>,
    pub role: Option<Role>,
    /// A guest account, or nobody signed in.
    pub guest: bool,
    /// A stable id for callers who are not signed in (their address), for rollouts.
    pub anonymous_id: Option<&'a str>,
    /// ISO 3166 alpha-2, any case.
    pub country: Option<&'a str>,
}

/// Unleash's normalised bucket of `id` in `group_id`: 1–100 (`None` only if hashing failed,
/// which reading from memory does not).
pub fn rollout_bucket(group_id: &str, id: &str) -> Option<u32> {
    let key = format!("{group_id}:{id}");
    murmur3::murmur3_32(&mut std::io::Cursor::new(key.as_bytes()), 0).ok().map(|hash| hash % 100 + 1)
}

/// A flag made ready for evaluation: lists turned into sets, roles parsed.
#[derive(Debug)]
pub(crate) struct CompiledFlag {
    enabled: bool,
    off: FlagValue,
    default: FlagValue,
    rules: Vec<CompiledRule>,
    name: String,
}

#[derive(Debug)]
struct CompiledRule {
    when: Vec<CompiledCondition>,
    then: FlagValue,
}

#[derive(Debug)]
enum CompiledCondition {
    Users(HashSet<Uuid>),
    Roles(Vec<Role>),
    Attribute(Attribute, Vec<String>),
    Rollout { percentage: u32, group_id: Option<String> },
}

impl CompiledFlag {
    pub(crate) fn compile(flag: &Flag) -> Self {
        let definition = &flag.definition;
        let rules = definition
            .rules
            .iter()
            .map(|rule| CompiledRule {
                when: rule.when.iter().map(compile_condition).collect(),
                then: rule.then.clone(),
            })
            .collect();
        Self {
            enabled: definition.enabled,
            off: definition.off_value(),
            default: definition.default.clone(),
            rules,
            name: flag.name.as_str().to_owned(),
        }
    }

    /// Enabled with rules: the answer may depend on the caller.
    pub(crate) fn varies(&self) -> bool {
        self.enabled && !self.rules.is_empty()
    }

    pub(crate) fn evaluate(&self, context: &FlagContext<'_>) -> &FlagValue {
        if !self.enabled {
            return &self.off;
        }
        self.rules
            .iter()
            .find(|rule| rule.when.iter().all(|condition| self.holds(condition, context)))
            .map_or(&self.default, |rule| &rule.then)
    }

    fn holds(&self, condition: &CompiledCondition, context: &FlagContext<'_>) -> bool {
        match condition {
            CompiledCondition::Users(ids) => context.user_id.is_some_and(|id| ids.contains(&id)),
            CompiledCondition::Roles(roles) => context.role.is_some_and(|role| roles.contains(&role)),
            CompiledCondition::Attribute(name, values) => {
                let staff = context.role.is_some_and(|role| role.includes(Role::Staff));
                let actual = match name {
                    Attribute::Country => context.country,
                    Attribute::Guest => Some(if context.guest { "true" } else { "false" }),
                    Attribute::Staff => Some(if staff { "true" } else { "false" }),
                };
                actual.is_some_and(|actual| values.iter().any(|value| value.eq_ignore_ascii_case(actual)))
            }
            CompiledCondition::Rollout { percentage, group_id } => {
                let group = group_id.as_deref().unwrap_or(&self.name);
                let bucket = match (context.user_id, context.anonymous_id) {
                    (Some(user_id), _) => rollout_bucket(group, &user_id.to_string()),
                    (None, Some(anonymous)) => rollout_bucket(group, anonymous),
                    (None, None) => return false,
                };
                match bucket {
                    Some(bucket) => *percentage > 0 && bucket <= *percentage,
                    None => {
                        service::count_error(&self.name, "bucketing");
                        false
                    }
                }
            }
        }
    }
}

fn compile_condition(condition: &Condition) -> CompiledCondition {
    match condition {
        Condition::Users { ids } => CompiledCondition::Users(ids.iter().copied().collect()),
        // Validated on the way in; an unknown role (from a newer version's row) matches nobody.
        Condition::Roles { roles } => {
            CompiledCondition::Roles(roles.iter().filter_map(|role| Role::parse(role).ok()).collect())
        }
        Condition::Attribute { name, values } => CompiledCondition::Attribute(*name, values.clone()),
        Condition::Rollout { percentage, group_id } => {
            CompiledCondition::Rollout { percentage: u32::from(*percentage), group_id: group_id.clone() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(definition: FlagDefinition) -> CompiledFlag {
        let flag = Flag {
            name: FlagName::parse("feature.b3").unwrap(),
            definition,
            version: 1,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        CompiledFlag::compile(&flag)
    }

    fn boolean(enabled: bool, default: bool, rules: Vec<Rule>) -> FlagDefinition {
        FlagDefinition {
            description: String::new(),
            kind: FlagKind::Boolean,
            variants: vec![],
            enabled,
            default: FlagValue::Bool(default),
            rules,
        }
    }

    fn rollout(percentage: u8, group: &str) -> Rule {
        Rule {
            when: vec![Condition::Rollout { percentage, group_id: Some(group.into()) }],
            then: FlagValue::Bool(true),
        }
    }

    fn anonymous(id: &str) -> FlagContext<'_> {
        FlagContext { anonymous_id: Some(id), ..FlagContext::default() }
    }

    #[test]
    fn buckets_match_the_unleash_clients() {
        // The figures every Unleash client asserts (node, java, go agree on them).
        assert_eq!(rollout_bucket("gr1", "123"), Some(73));
        assert_eq!(rollout_bucket("groupX", "999"), Some(25));
    }

    #[test]
    fn gradual_rollout_follows_the_unleash_client_specification() {
        // 03-gradual-rollout-user-id-strategy: group AB12A.
        let all = flag(boolean(true, false, vec![rollout(100, "AB12A")]));
        assert_eq!(all.evaluate(&anonymous("123")), &FlagValue::Bool(true));
        assert_eq!(all.evaluate(&FlagContext::default()), &FlagValue::Bool(false), "nobody to bucket");
        let half = flag(boolean(true, false, vec![rollout(50, "AB12A")]));
        assert_eq!(half.evaluate(&anonymous("122")), &FlagValue::Bool(true));
        assert_eq!(half.evaluate(&anonymous("155")), &FlagValue::Bool(false));
        let none = flag(boolean(true, false, vec![rollout(0, "AB12A")]));
        assert_eq!(none.evaluate(&anonymous("122")), &FlagValue::Bool(false));
        // Feature.D3: a 0% rollout followed by the default strategy is on for everyone.
        let with_default = flag(boolean(true, true, vec![rollout(0, "AB12A")]));
        assert_eq!(with_default.evaluate(&FlagContext::default()), &FlagValue::Bool(true));
    }

    #[test]
    fn raising_the_percentage_keeps_everyone_already_in() {
        let ids: Vec<String> = (0..2000).map(|n| format!("visitor-{n}")).collect();
        let mut previous: HashSet<&str> = HashSet::new();
        for percentage in [1u8, 5, 10, 25, 50, 75, 100] {
            let rolled = flag(boolean(true, false, vec![rollout(percentage, "checkout")]));
            let inside: HashSet<&str> = ids
                .iter()
                .map(String::as_str)
                .filter(|id| rolled.evaluate(&anonymous(id)) == &FlagValue::Bool(true))
                .collect();
            assert!(previous.is_subset(&inside), "{percentage}% dropped someone");
            let share = inside.len() as f64 / ids.len() as f64 * 100.0;
            assert!((share - f64::from(percentage)).abs() < 4.0, "{percentage}% reached {share:.1}%");
            previous = inside;
        }
        assert_eq!(previous.len(), ids.len());
    }

    #[test]
    fn the_kill_switch_and_the_first_holding_rule_decide() {
        let user = Uuid::from_u128(7);
        let staff_or_listed = vec![
            Rule { when: vec![Condition::Users { ids: vec![user] }], then: FlagValue::Bool(false) },
            Rule { when: vec![Condition::Roles { roles: vec!["staff".into()] }], then: FlagValue::Bool(true) },
            Rule {
                when: vec![Condition::Attribute { name: Attribute::Country, values: vec!["DE".into()] }],
                then: FlagValue::Bool(true),
            },
        ];
        let on = flag(boolean(true, false, staff_or_listed.clone()));
        let staff = FlagContext { user_id: Some(Uuid::from_u128(8)), role: Some(Role::Staff), ..Default::default() };
        let denied_staff = FlagContext { user_id: Some(user), role: Some(Role::Staff), ..Default::default() };
        let german = FlagContext { country: Some("de"), guest: true, ..Default::default() };
        assert_eq!(on.evaluate(&staff), &FlagValue::Bool(true));
        assert_eq!(on.evaluate(&denied_staff), &FlagValue::Bool(false), "the deny list comes first");
        assert_eq!(on.evaluate(&german), &FlagValue::Bool(true), "country codes ignore case");
        assert_eq!(on.evaluate(&FlagContext::default()), &FlagValue::Bool(false), "the default");
        let off = flag(boolean(false, true, staff_or_listed));
        assert_eq!(off.evaluate(&staff), &FlagValue::Bool(false), "disabled answers false to everyone");
    }

    #[test]
    fn variant_flags_answer_their_variants_and_the_first_when_off() {
        let definition = FlagDefinition {
            description: "checkout button".into(),
            kind: FlagKind::Variant,
            variants: vec!["control".into(), "green".into()],
            enabled: true,
            default: FlagValue::Variant("green".into()),
            rules: vec![Rule {
                when: vec![Condition::Attribute { name: Attribute::Guest, values: vec!["true".into()] }],
                then: FlagValue::Variant("control".into()),
            }],
        };
        assert_eq!(definition.validate(), Ok(()));
        let on = flag(definition.clone());
        let guest = FlagContext { guest: true, ..Default::default() };
        let member = FlagContext { user_id: Some(Uuid::from_u128(1)), ..Default::default() };
        assert_eq!(on.evaluate(&guest), &FlagValue::Variant("control".into()));
        assert_eq!(on.evaluate(&member), &FlagValue::Variant("green".into()));
        let off = flag(FlagDefinition { enabled: false, ..definition });
        assert_eq!(off.evaluate(&member), &FlagValue::Variant("control".into()));
    }

    #[test]
    fn invalid_definitions_list_every_problem() {
        let definition = FlagDefinition {
            description: "x".repeat(501),
            kind: FlagKind::Boolean,
            variants: vec!["a".into()],
            enabled: true,
            default: FlagValue::Variant("a".into()),
            rules: vec![
                Rule { when: vec![], then: FlagValue::Bool(true) },
                Rule {
                    when: vec![
                        Condition::Rollout { percentage: 101, group_id: Some("bad group".into()) },
                        Condition::Roles { roles: vec!["root".into()] },
                        Condition::Attribute { name: Attribute::Country, values: vec!["Germany".into()] },
                    ],
                    then: FlagValue::Bool(true),
                },
            ],
        };
        let errors = definition.validate().unwrap_err();
        let fields: Vec<&str> = errors.errors().iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "description",
                "variants",
                "default",
                "rules[0].when",
                "rules[1].when[0].percentage",
                "rules[1].when[0].groupId",
                "rules[1].when[1].roles[0]",
                "rules[1].when[2].in[0]",
            ]
        );
        assert!(FlagName::parse("Maintenance").is_err());
        assert!(FlagName::parse("").is_err());
        assert!(FlagName::parse("guest_checkout").is_ok());
    }

    #[test]
    fn definitions_read_and_write_the_wire_shape() {
        let wire = serde_json::json!({
            "kind": "boolean",
            "enabled": true,
            "default": false,
            "rules": [
                {"when": [{"type": "rollout", "percentage": 25}], "then": true},
                {"when": [{"type": "attribute", "name": "country", "in": ["DE"]}], "then": true}
            ]
        });
        let definition: FlagDefinition = serde_json::from_value(wire).unwrap();
        assert_eq!(definition.rules[0].when[0], Condition::Rollout { percentage: 25, group_id: None });
        let back = serde_json::to_value(&definition).unwrap();
        assert_eq!(back["rules"][1]["when"][0]["in"], serde_json::json!(["DE"]));
        let unknown = serde_json::json!({"kind": "boolean", "enabled": true, "default": false, "colour": 1});
        assert!(serde_json::from_value::<FlagDefinition>(unknown).is_err());
    }
}
