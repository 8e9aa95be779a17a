-- payment_events remember the webhook events each payment provider sent and the shop applied,
-- by the provider's event id, so a redelivered event is acknowledged without acting twice
-- (the order state machine would refuse the second transition anyway; this also keeps the
-- audit of what the provider told us). order_id is not a foreign key: an event may name an
-- order this shop does not have, and the record outlives purged orders. Purged by received_at.

create table payment_events (
    provider text not null check (length(provider) between 1 and 100),
    event_id text not null check (length(event_id) between 1 and 255),
    event_type text not null check (length(event_type) between 1 and 100),
    order_id uuid,
    outcome text not null check (length(outcome) between 1 and 200),
    received_at timestamptz not null,
    constraint payment_events_pkey primary key (provider, event_id)
);
create index payment_events_received_at_idx on payment_events (received_at);
