-- Webhook endpoints and their delivery log are lost; queued webhook jobs find nothing to do.
drop table if exists webhook_deliveries;
drop table if exists webhook_endpoints;
