-- The durable job queue and the next occurrence of each recurring job.
-- A job is queued → running (leased to one worker until lease_expires_at) → succeeded, or
-- failed (due again at run_at) and finally dead. Writes set updated_at explicitly from the
-- application's clock, so this table has no updated_at trigger: a lease extension is a
-- heartbeat, not a change, and deliberately leaves updated_at alone. The state is text with a
-- check (not an enum) so that both dialects agree.

create table jobs (
    id uuid primary key,
    kind text not null,
    queue text not null,
    payload jsonb not null,
    priority integer not null default 0,
    state text not null default 'queued',
    attempts integer not null default 0 check (attempts >= 0),
    max_attempts integer not null check (max_attempts >= 1),
    run_at timestamptz not null,
    lease_owner text,
    lease_expires_at timestamptz,
    last_error text,
    unique_key text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    finished_at timestamptz,
    constraint jobs_state check (state in ('queued', 'running', 'succeeded', 'failed', 'dead')),
    constraint jobs_lease check ((state = 'running') = (lease_owner is not null and lease_expires_at is not null))
);

-- The claim: due jobs of one queue, highest priority then earliest run_at.
create index jobs_claim_idx on jobs (queue, priority desc, run_at, id) where state in ('queued', 'failed');
-- At most one live job per unique key; enqueueing another is a no-op.
create unique index jobs_unique_key on jobs (unique_key)
    where unique_key is not null and state in ('queued', 'running', 'failed');
-- Purging finished jobs past their retention.
create index jobs_state_finished_at_idx on jobs (state, finished_at);
-- Recovering the jobs of workers that died.
create index jobs_lease_expires_at_idx on jobs (lease_expires_at) where state = 'running';

create table job_schedules (
    name text primary key,
    next_run_at timestamptz not null
);
