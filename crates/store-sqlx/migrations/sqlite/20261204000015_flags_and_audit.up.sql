-- Feature flags and the audit log.
-- feature_flags holds each flag's definition as the JSON the domain reads and writes (kind,
-- kill switch, default, rules), its version (the ETag, +1 per change) and when it changed.
-- Every flag write bumps the 'flags' generation in the same transaction; each instance polls
-- it and reloads its in-memory snapshot when it moved.
-- audit_log records every administrative action in the transaction of the change itself:
-- actor, action, target, the target before and after (JSON, secrets redacted), the request id.
create table feature_flags (
    name text primary key not null,
    definition text not null check (json_valid(definition)),
    version integer not null check (version > 0),
    updated_at text not null
) strict;

insert into cache_generations (family, slot) values ('flags', 0);

create table audit_log (
    id blob primary key not null check (length(id) = 16),
    at text not null,
    actor text not null,
    action text not null,
    target text not null,
    before text check (before is null or json_valid(before)),
    after text check (after is null or json_valid(after)),
    request_id text
) strict;
create index audit_log_at on audit_log (at, id);
create index audit_log_target on audit_log (target, at);
