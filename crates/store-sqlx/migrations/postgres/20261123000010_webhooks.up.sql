-- Merchant webhooks.
-- webhook_endpoints are the URLs an admin registered, with the events they subscribe to (a
-- comma-separated list of event names, checked by the adapter), their signing secret (plain
-- text: the shop must sign with it), when and why they were disabled (null: enabled), and the
-- failed attempts since the last success across their deliveries.
-- webhook_deliveries are the delivery log: one row per event and endpoint (unique, so a
-- re-run of the dispatch job adds nothing), the exact JSON body that is signed and sent, its
-- state, the attempts so far and the last one's status, error (truncated) and time. They go
-- with their endpoint (on delete cascade) and are purged by age once finished.
-- Every write sets updated_at from the application's clock, so there are no updated_at triggers.

create table webhook_endpoints (
    id uuid primary key,
    url text not null,
    description text,
    events text not null check (length(events) > 0),
    secret text not null,
    disabled_at timestamptz,
    disabled_reason text,
    consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table webhook_deliveries (
    id uuid primary key,
    endpoint_id uuid not null,
    event_id uuid not null,
    event_type text not null,
    payload text not null,
    state text not null default 'pending',
    attempts integer not null default 0 check (attempts >= 0),
    last_status integer,
    last_error text,
    last_attempt_at timestamptz,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint webhook_deliveries_endpoint_id_fkey foreign key (endpoint_id)
        references webhook_endpoints (id) on delete cascade,
    constraint webhook_deliveries_state check (state in ('pending', 'succeeded', 'failed', 'abandoned')),
    constraint webhook_deliveries_event_type
        check (event_type in ('order.paid', 'order.cancelled', 'order.fulfilled', 'order.refunded'))
);
-- One delivery per event and endpoint; also serves the foreign key's cascade.
create unique index webhook_deliveries_endpoint_id_event_id_key on webhook_deliveries (endpoint_id, event_id);
-- The delivery log of an endpoint, newest first.
create index webhook_deliveries_endpoint_id_created_at_idx on webhook_deliveries (endpoint_id, created_at, id);
-- Purging finished deliveries by age.
create index webhook_deliveries_created_at_idx on webhook_deliveries (created_at);
