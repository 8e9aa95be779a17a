-- Back to saved responses. The bodies cannot be recreated: completed records get an empty JSON
-- body (a replay still answers with the first status and the order's Location).
create table idempotency_records_old (
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
insert into idempotency_records_old
    (user_id, scope, key, request_hash, state, locked_until, response_status, response_body, response_location,
     order_id, created_at, expires_at)
    select user_id, scope, key, request_hash, state, locked_until,
        case outcome when 'paid' then 201 when 'pending' then 202 when 'declined' then 402 end,
        case when state = 'completed' then '{}' end,
        case when state = 'completed' and order_id is not null then '/api/v1/orders/' || lower(
            substr(hex(order_id), 1, 8) || '-' || substr(hex(order_id), 9, 4) || '-' || substr(hex(order_id), 13, 4)
            || '-' || substr(hex(order_id), 17, 4) || '-' || substr(hex(order_id), 21)) end,
        order_id, created_at, expires_at
    from idempotency_records;
drop table idempotency_records;
alter table idempotency_records_old rename to idempotency_records;
create index idempotency_records_expires_at_idx on idempotency_records (expires_at);
