-- A completed checkout keeps how it ended (paid, pending or declined) and its order, not an
-- HTTP response: a replay answers with that outcome and the order as it is then. Completed
-- records of the old shape are converted (201 paid, 202 pending, 402 declined).
alter table idempotency_records add column outcome text
    constraint idempotency_records_outcome_name check (outcome in ('paid', 'pending', 'declined'));
update idempotency_records
    set outcome = case response_status when 201 then 'paid' when 202 then 'pending' else 'declined' end
    where state = 'completed';
alter table idempotency_records drop constraint idempotency_records_response;
alter table idempotency_records
    drop column response_status,
    drop column response_body,
    drop column response_location;
alter table idempotency_records add constraint idempotency_records_outcome
    check ((state = 'completed') = (outcome is not null));
