-- The record of applied payment webhook events is lost; redeliveries are then absorbed by the
-- order state machine alone.
drop table if exists payment_events;
