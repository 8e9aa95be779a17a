-- Without the flag a guest would become an account nobody can sign in to and nothing purges:
-- delete the guests (their sessions, tokens and known devices cascade), then the column.
drop index if exists users_idle_guests_idx;
delete from users where is_guest = 1;
alter table users drop column is_guest;
