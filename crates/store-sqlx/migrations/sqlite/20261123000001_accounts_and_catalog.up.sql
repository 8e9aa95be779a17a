-- Accounts (users, sessions, API tokens) and the catalog (categories, products).
-- Ids are UUIDv7 stored as 16-byte blobs; timestamps are UTC text in one fixed-width
-- RFC 3339 format (2026-11-23T10:00:00.000000Z) so that text order is time order;
-- money is integer minor units. updated_at is maintained by triggers.

create table users (
    id blob primary key not null check (length(id) = 16),
    email text not null check (length(email) between 3 and 254),
    name text not null check (length(name) between 1 and 400),
    role text not null default 'customer' check (role in ('customer', 'staff', 'admin')),
    disabled integer not null default 0 check (disabled in (0, 1)),
    password_hash text not null,
    created_at text not null,
    updated_at text not null
) strict;
create unique index users_email_key on users (email);
create index users_created_at_idx on users (created_at);

create table sessions (
    id blob primary key not null check (length(id) = 16),
    token_hash blob not null check (length(token_hash) = 32),
    user_id blob not null references users (id) on delete cascade,
    created_at text not null,
    updated_at text not null,
    last_seen_at text not null,
    expires_at text not null
) strict;
create unique index sessions_token_hash_key on sessions (token_hash);
create index sessions_user_id_idx on sessions (user_id);
create index sessions_expires_at_idx on sessions (expires_at);
create index sessions_last_seen_at_idx on sessions (last_seen_at);

create table api_tokens (
    id blob primary key not null check (length(id) = 16),
    user_id blob not null references users (id) on delete cascade,
    name text not null check (length(name) between 1 and 400),
    token_hash blob not null check (length(token_hash) = 32),
    created_at text not null,
    updated_at text not null,
    expires_at text,
    last_used_at text
) strict;
create unique index api_tokens_token_hash_key on api_tokens (token_hash);
create index api_tokens_user_id_idx on api_tokens (user_id);

create table categories (
    id blob primary key not null check (length(id) = 16),
    name text not null check (length(name) between 1 and 800),
    slug text not null check (length(slug) between 1 and 100),
    description text not null default '',
    created_at text not null,
    updated_at text not null
) strict;
create unique index categories_slug_key on categories (slug);
create index categories_created_at_idx on categories (created_at);

create table products (
    id blob primary key not null check (length(id) = 16),
    name text not null check (length(name) between 1 and 800),
    slug text not null check (length(slug) between 1 and 100),
    description text not null default '',
    price_minor integer not null check (price_minor >= 0),
    currency text not null check (length(currency) = 3 and currency = upper(currency)),
    stock integer not null check (stock >= 0),
    category_id blob not null references categories (id) on delete restrict,
    status text not null default 'active' check (status in ('active', 'archived')),
    version integer not null default 1 check (version >= 1),
    created_at text not null,
    updated_at text not null
) strict;
create unique index products_slug_key on products (slug);
create index products_category_id_idx on products (category_id);
create index products_status_created_at_idx on products (status, created_at, id);
create index products_status_price_idx on products (status, price_minor);

-- Keep updated_at true even for writes that forget it: when an update leaves updated_at
-- unchanged, stamp the current time.
create trigger users_updated_at after update on users
when new.updated_at = old.updated_at
begin
    update users set updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = new.id;
end;
create trigger sessions_updated_at after update on sessions
when new.updated_at = old.updated_at
begin
    update sessions set updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = new.id;
end;
create trigger api_tokens_updated_at after update on api_tokens
when new.updated_at = old.updated_at
begin
    update api_tokens set updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = new.id;
end;
create trigger categories_updated_at after update on categories
when new.updated_at = old.updated_at
begin
    update categories set updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = new.id;
end;
create trigger products_updated_at after update on products
when new.updated_at = old.updated_at
begin
    update products set updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = new.id;
end;
