-- Carts, orders and idempotency keys (checkout).
-- cart_items holds each user's current cart (guests included): one line per product, with the
-- quantity (1 to 99) and when the line was added and last changed. A cart is all the lines of
-- one user; it is abandoned when its newest line is older than the purge's cutoff. Lines go
-- with their user and with their product (on delete cascade).
-- orders are never deleted: deleting a user who has orders is refused (on delete restrict), so
-- idle guests with orders are kept. An order's status moves pending_payment → paid → fulfilled,
-- pending_payment → cancelled, paid → cancelled, paid | fulfilled → refunded; each state change
-- records its time (paid_at, …). The shipping address is copied into the order. The status is
-- text with a check (not an enum) so that both dialects agree.
-- order_lines are the order's products as they were ordered (name and unit price copied), in
-- checkout order (position from 0). A deleted product leaves its lines with product_id null.
-- idempotency_records keep, per user, operation (scope) and client key, the SHA-256 of the
-- request and its outcome: in_progress while its holder's lock (locked_until) lasts, then
-- completed with the saved response; order_id links the order the request created. Records are
-- purged by expires_at.
-- Every write sets updated_at from the application's clock, so there are no updated_at
-- triggers. SQLite does not report constraint names; they are written here so the schema reads
-- like PostgreSQL's, and the adapter maps violations to these names.

create table cart_items (
    user_id blob not null,
    product_id blob not null,
    quantity integer not null,
    added_at text not null,
    updated_at text not null,
    constraint cart_items_pkey primary key (user_id, product_id),
    constraint cart_items_user_id_fkey foreign key (user_id) references users (id) on delete cascade,
    constraint cart_items_product_id_fkey foreign key (product_id) references products (id) on delete cascade,
    constraint cart_items_quantity check (quantity between 1 and 99)
) strict;
-- Purging abandoned carts (each user's newest line) without reading the lines themselves.
create index cart_items_user_id_updated_at_idx on cart_items (user_id, updated_at);
-- The cascade when a product is deleted.
create index cart_items_product_id_idx on cart_items (product_id);

create table orders (
    id blob primary key not null check (length(id) = 16),
    user_id blob not null,
    status text not null default 'pending_payment',
    currency text not null check (length(currency) = 3 and currency = upper(currency)),
    total_minor integer not null check (total_minor >= 0),
    shipping_name text not null,
    shipping_line1 text not null,
    shipping_line2 text,
    shipping_city text not null,
    shipping_postal_code text not null,
    shipping_country text not null check (length(shipping_country) = 2 and shipping_country = upper(shipping_country)),
    test_mode integer not null check (test_mode in (0, 1)),
    payment_reference text,
    cancel_reason text,
    created_at text not null,
    updated_at text not null,
    paid_at text,
    fulfilled_at text,
    cancelled_at text,
    refunded_at text,
    constraint orders_user_id_fkey foreign key (user_id) references users (id) on delete restrict,
    constraint orders_status
        check (status in ('pending_payment', 'paid', 'fulfilled', 'cancelled', 'refunded'))
) strict;
-- A customer's orders, newest first; it also serves the user_id foreign key.
create index orders_user_id_created_at_idx on orders (user_id, created_at, id);
-- Staff lists by status, and finding pending orders past their payment deadline.
create index orders_status_created_at_idx on orders (status, created_at, id);
-- Staff lists of every order.
create index orders_created_at_idx on orders (created_at, id);

create table order_lines (
    order_id blob not null,
    position integer not null check (position >= 0),
    product_id blob,
    name text not null,
    unit_price_minor integer not null check (unit_price_minor >= 0),
    quantity integer not null,
    constraint order_lines_pkey primary key (order_id, position),
    constraint order_lines_order_id_fkey foreign key (order_id) references orders (id) on delete cascade,
    constraint order_lines_product_id_fkey foreign key (product_id) references products (id) on delete set null,
    constraint order_lines_quantity check (quantity between 1 and 99)
) strict;
-- Setting product_id to null when a product is deleted.
create index order_lines_product_id_idx on order_lines (product_id);

create table idempotency_records (
    user_id blob not null,
    scope text not null check (length(scope) between 1 and 100),
    key text not null check (length(key) between 1 and 255),
    request_hash blob not null check (length(request_hash) = 32),
    state text not null,
    locked_until text,
    response_status integer check (response_status between 100 and 599),
    response_body text,
    response_location text,
    order_id blob,
    created_at text not null,
    expires_at text not null,
    constraint idempotency_records_pkey primary key (user_id, scope, key),
    constraint idempotency_records_user_id_fkey foreign key (user_id) references users (id) on delete cascade,
    constraint idempotency_records_order_id_fkey foreign key (order_id) references orders (id) on delete set null,
    constraint idempotency_records_state check (state in ('in_progress', 'completed')),
    constraint idempotency_records_lock check ((state = 'in_progress') = (locked_until is not null)),
    constraint idempotency_records_response
        check ((state = 'completed') = (response_status is not null and response_body is not null))
) strict;
-- Purging expired records.
create index idempotency_records_expires_at_idx on idempotency_records (expires_at);
