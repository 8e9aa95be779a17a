-- Guest accounts (anonymous checkout): users.is_guest is true for an ephemeral account with a
-- placeholder address under .invalid and a password hash that never verifies. Upgrading a guest
-- sets its address, name and hash and clears the flag in place, so its id (and data) stay.
-- Guests created long ago with no session left are deleted; their sessions, tokens and known
-- devices go with them (on delete cascade). Existing users are full accounts.

alter table users add column is_guest boolean not null default false;
-- Finding idle guests by age; full accounts are never purged, so they stay out of the index.
create index users_idle_guests_idx on users (created_at) where is_guest;
