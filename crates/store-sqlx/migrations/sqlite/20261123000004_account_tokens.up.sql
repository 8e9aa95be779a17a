-- Email verification and one-time account tokens (email verification, password reset).
-- users.email_verified_at is null until the owner follows a verification link; existing users
-- start unverified. Adding a column leaves the users_updated_at trigger as it was: it compares
-- updated_at only.
-- A token is stored only as the SHA-256 of its secret. It is usable while used_at is null and
-- expires_at is in the future; replacing a user's token of one purpose deletes the earlier ones.
-- Rows change only when used (used_at, set from the application's clock), so there is no
-- updated_at.

alter table users add column email_verified_at text;

create table account_tokens (
    id blob primary key not null check (length(id) = 16),
    user_id blob not null references users (id) on delete cascade,
    purpose text not null,
    token_hash blob not null check (length(token_hash) = 32),
    created_at text not null,
    expires_at text not null,
    used_at text,
    constraint account_tokens_purpose check (purpose in ('email_verification', 'password_reset'))
) strict;
create unique index account_tokens_token_hash_key on account_tokens (token_hash);
-- Replacing a user's token of one purpose.
create index account_tokens_user_id_purpose_idx on account_tokens (user_id, purpose);
-- Purging expired tokens.
create index account_tokens_expires_at_idx on account_tokens (expires_at);
