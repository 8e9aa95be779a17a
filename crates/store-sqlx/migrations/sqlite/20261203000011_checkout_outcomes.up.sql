-- A completed checkout keeps how it ended (paid, pending or declined) and its order, not an
-- HTTP response: a replay answers with that outcome and the order as it is then. Completed
-- records of the old shape are converted (201 paid, 202 pending, 402 declined). SQLite cannot
-- drop a table constraint, so the table is rebuilt (nothing references it).
create table idempotency_records_new (
    user_id blob not null,
    scope text not null check (length(scope) between 1 and 100),
    key text not null check (length(key) between 1 and 255),
    request_hash blob not null check (length(request_hash) = 32),
    state text not null,
    locked_until text,
    outcome text,
    order_id blob,
    created_at text not null,
    expires_at text not null,
    constraint idempotency_records_pkey primary key (user_id, scope, key),
    constraint idempotency_records_user_id_fkey foreign key (user_id) references users (id) on delete cascade,
    constraint idempotency_records_order_id_fkey foreign key (order_id) references orders (id) on delete set null,
    constraint idempotency_records_state check (state in ('in_progress', 'completed')),
    constraint idempotency_records_lock check ((state = 'in_progress') = (locked_until is not null)),
    constraint idempotency_records_outcome_name check (outcome in ('paid', 'pending', 'declined')),
    constraint idempotency_records_outcome check ((state = 'completed') = (outcome is not null))
) strict;
insert into idempotency_records_new
    (user_id, scope, key, request_hash, state, locked_until, outcome, order_id, created_at, expires_at)
    select user_id, scope, key, request_hash, state, locked_until,
        case when state = 'completed' then
            case response_status when 201 then 'paid' when 202 then 'pending' else 'declined' end
        end,
        order_id, created_at, expires_at
    from idempotency_records;
drop table idempotency_records;
alter table idempotency_records_new rename to idempotency_records;
-- Purging expired records.
create index idempotency_records_expires_at_idx on idempotency_records (expires_at);
