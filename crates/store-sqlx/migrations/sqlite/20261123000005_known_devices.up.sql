-- Login challenges and known devices.
-- A sign-in from a device the account has not used before (no known_devices row for the hash of
-- its device cookie) is confirmed by a one-time 'login_challenge' token that carries that hash
-- in account_tokens.device_hash; using the token records the device. A challenge without a
-- device hash is never usable; the other purposes leave it null.
-- SQLite cannot alter a check constraint, so account_tokens is rebuilt: create the new table,
-- copy the rows, drop the old one, rename, recreate the indexes. No table references
-- account_tokens and it has no triggers, so dropping it touches nothing else.
-- In known_devices only last_seen_at changes (set from the application's clock), so there is no
-- updated_at.

create table account_tokens_new (
    id blob primary key not null check (length(id) = 16),
    user_id blob not null references users (id) on delete cascade,
    purpose text not null,
    token_hash blob not null check (length(token_hash) = 32),
    created_at text not null,
    expires_at text not null,
    used_at text,
    device_hash blob check (length(device_hash) = 32),
    constraint account_tokens_purpose
        check (purpose in ('email_verification', 'password_reset', 'login_challenge'))
) strict;
insert into account_tokens_new (id, user_id, purpose, token_hash, created_at, expires_at, used_at)
    select id, user_id, purpose, token_hash, created_at, expires_at, used_at from account_tokens;
drop table account_tokens;
alter table account_tokens_new rename to account_tokens;
create unique index account_tokens_token_hash_key on account_tokens (token_hash);
-- Replacing a user's token of one purpose.
create index account_tokens_user_id_purpose_idx on account_tokens (user_id, purpose);
-- Purging expired tokens.
create index account_tokens_expires_at_idx on account_tokens (expires_at);

create table known_devices (
    user_id blob not null references users (id) on delete cascade,
    device_hash blob not null check (length(device_hash) = 32),
    created_at text not null,
    last_seen_at text not null
) strict;
-- One row per user and device; it also serves the user_id foreign key.
create unique index known_devices_user_device_key on known_devices (user_id, device_hash);
-- Forgetting devices not seen for a long time.
create index known_devices_last_seen_at_idx on known_devices (last_seen_at);
