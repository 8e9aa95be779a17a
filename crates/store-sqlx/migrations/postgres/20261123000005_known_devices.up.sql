-- Login challenges and known devices.
-- A sign-in from a device the account has not used before (no known_devices row for the hash of
-- its device cookie) is confirmed by a one-time 'login_challenge' token that carries that hash
-- in account_tokens.device_hash; using the token records the device. A challenge without a
-- device hash is never usable; the other purposes leave it null.
-- In known_devices only last_seen_at changes (set from the application's clock), so there is no
-- updated_at.

alter table account_tokens add column device_hash bytea check (length(device_hash) = 32);
alter table account_tokens
    drop constraint account_tokens_purpose,
    add constraint account_tokens_purpose
        check (purpose in ('email_verification', 'password_reset', 'login_challenge'));

create table known_devices (
    user_id uuid not null references users (id) on delete cascade,
    device_hash bytea not null check (length(device_hash) = 32),
    created_at timestamptz not null,
    last_seen_at timestamptz not null,
    -- One row per user and device; it also serves the user_id foreign key.
    constraint known_devices_user_device_key primary key (user_id, device_hash)
);
-- Forgetting devices not seen for a long time.
create index known_devices_last_seen_at_idx on known_devices (last_seen_at);
