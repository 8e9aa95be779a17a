-- Feature flags and the audit log.
-- feature_flags holds each flag's definition as the JSON the domain reads and writes (kind,
-- kill switch, default, rules), its version (the ETag, +1 per change) and when it changed.
-- Every flag write bumps the 'flags' generation in the same transaction; each instance polls
-- it and reloads its in-memory snapshot when it moved.
-- audit_log records every administrative action in the transaction of the change itself:
-- actor, action, target, the target before and after (JSON, secrets redacted), the request id.
create table feature_flags (
    name text primary key,
    definition jsonb not null,
    version bigint not null check (version > 0),
    updated_at timestamptz not null
);

insert into cache_generations (family, slot) values ('flags', 0);

create table audit_log (
    id uuid primary key,
    at timestamptz not null,
    actor text not null,
    action text not null,
    target text not null,
    before jsonb,
    after jsonb,
    request_id text
);
create index audit_log_at on audit_log (at, id);
create index audit_log_target on audit_log (target, at);
