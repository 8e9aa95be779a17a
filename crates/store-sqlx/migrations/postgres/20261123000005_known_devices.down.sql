drop table if exists known_devices;

-- The previous purpose check refuses login challenges, and they mean nothing without
-- known_devices: delete them first.
delete from account_tokens where purpose = 'login_challenge';
alter table account_tokens
    drop constraint account_tokens_purpose,
    add constraint account_tokens_purpose check (purpose in ('email_verification', 'password_reset'));
alter table account_tokens drop column if exists device_hash;
