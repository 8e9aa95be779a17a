drop table if exists known_devices;

-- The previous purpose check refuses login challenges, and they mean nothing without
-- known_devices: delete them, then rebuild account_tokens as it was.
delete from account_tokens where purpose = 'login_challenge';
create table account_tokens_old (
    id blob primary key not null check (length(id) = 16),
    user_id blob not null references users (id) on delete cascade,
    purpose text not null,
    token_hash blob not null check (length(token_hash) = 32),
    created_at text not null,
    expires_at text not null,
    used_at text,
    constraint account_tokens_purpose check (purpose in ('email_verification', 'password_reset'))
) strict;
insert into account_tokens_old (id, user_id, purpose, token_hash, created_at, expires_at, used_at)
    select id, user_id, purpose, token_hash, created_at, expires_at, used_at from account_tokens;
drop table account_tokens;
alter table account_tokens_old rename to account_tokens;
create unique index account_tokens_token_hash_key on account_tokens (token_hash);
-- Replacing a user's token of one purpose.
create index account_tokens_user_id_purpose_idx on account_tokens (user_id, purpose);
-- Purging expired tokens.
create index account_tokens_expires_at_idx on account_tokens (expires_at);
