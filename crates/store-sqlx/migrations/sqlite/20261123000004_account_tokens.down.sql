drop table if exists account_tokens;
alter table users drop column email_verified_at;
