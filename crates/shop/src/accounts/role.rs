//! Roles: what a user may do. Authorization is default-deny: a route names the roles it admits.

use std::fmt;

/// A user's role. Ordered: each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "customer" => Ok(Self::Customer),
            "staff" => Ok(Self::Staff),
            "admin" => Ok(Self::Admin),
            _ => Err("must be one of customer, staff, admin".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
            Self::Admin => "admin",
        }
    }

    /// Whether this role includes the rights of `required`.
    pub fn includes(self, required: Role) -> bool {
        self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_nest() {
        for role in [Role::Customer, Role::Staff, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
        assert!(Role::Admin.includes(Role::Staff));
        assert!(!Role::Customer.includes(Role::Staff));
    }
}
