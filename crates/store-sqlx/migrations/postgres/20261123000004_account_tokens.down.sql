drop table if exists account_tokens;
alter table users drop column if exists email_verified_at;
