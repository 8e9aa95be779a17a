-- Back to saved responses. The bodies cannot be recreated: completed records get an empty JSON
-- body (a replay still answers with the first status and the order's Location).
alter table idempotency_records add column response_status integer check (response_status between 100 and 599);
alter table idempotency_records add column response_body text;
alter table idempotency_records add column response_location text;
update idempotency_records
    set response_status = case outcome when 'paid' then 201 when 'pending' then 202 else 402 end,
        response_body = '{}',
        response_location = '/api/v1/orders/' || order_id::text
    where state = 'completed';
alter table idempotency_records drop constraint idempotency_records_outcome;
alter table idempotency_records drop column outcome;
alter table idempotency_records add constraint idempotency_records_response
    check ((state = 'completed') = (response_status is not null and response_body is not null));
