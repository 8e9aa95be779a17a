//! Accounts: users, roles, passwords, sessions and personal API tokens.

mod email;
mod password;
mod role;
mod service;
mod user;

pub use email::Email;
pub use password::{PasswordHasher, PasswordPlain};
pub use role::Role;
pub use service::{AccountService, AccountSettings, NewApiToken, SignedIn};
pub use user::{
    ApiToken, AuthMethod, Caller, NewApiTokenRecord, NewSession, NewUser, PersonName, Session, User, UserChanges,
    UserQuery, UserSort, UserWithPassword,
};
