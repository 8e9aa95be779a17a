-- Mail kept in the database because no SMTP server is configured: stored, never delivered.
-- The id is the sending job's, so a job that runs twice stores its message once. Rows are
-- written once and never updated, so there is no updated_at.

create table mail_outbox (
    id uuid primary key,
    recipient text not null,
    subject text not null,
    text_body text not null,
    html_body text not null,
    created_at timestamptz not null
);
-- Listing most recent first (created_at desc, id desc) and purging by age.
create index mail_outbox_created_at_idx on mail_outbox (created_at, id);
