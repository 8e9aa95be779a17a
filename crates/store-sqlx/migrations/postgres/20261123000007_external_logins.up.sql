-- Sign-in with external identity providers (OpenID Connect).
-- external_identities links an issuer's subject to one of our accounts; a subject is linked to
-- at most one account, an account may have several links. It is keyed by the issuer (the `iss`
-- URL of the verified ID token) and the subject (`sub`), not by our configured name for the
-- provider: OpenID Connect makes `sub` unique and never reassigned only within its issuer
-- (Core §2, §5.7), so (issuer, subject) is the one stable identifier of a person. Keyed by our
-- name, pointing a configured provider at another issuer would sign the new issuer's subjects
-- in to the accounts linked to the same `sub` at the old one, and renaming it would orphan its
-- links.
-- Each is bounded to 255, as shop::accounts::MAX_ISSUER_LEN and MAX_SUBJECT_LEN bound it.
-- The links go with their account (on delete cascade). email is the address the provider gave
-- when the link was made, kept for information only. Links never change, so there is no
-- updated_at. The constraints are named because the adapter reports them by name.
-- pending_external_logins holds a sign-in between the redirect to the provider and its
-- callback, keyed by the SHA-256 of a random handle kept in the browser's cookie. A row is
-- deleted when its callback takes it (used or not, expired or not) and purged by expires_at
-- otherwise; it never changes, so there is no updated_at.

create table external_identities (
    issuer text not null check (length(issuer) between 1 and 255),
    subject text not null check (length(subject) between 1 and 255),
    user_id uuid not null,
    email text,
    created_at timestamptz not null,
    constraint external_identities_pkey primary key (issuer, subject),
    constraint external_identities_user_id_fkey foreign key (user_id) references users (id) on delete cascade
);
-- Listing an account's links, and the cascade when the account is deleted.
create index external_identities_user_id_idx on external_identities (user_id);

create table pending_external_logins (
    handle_hash bytea not null check (length(handle_hash) = 32),
    provider text not null,
    state text not null,
    nonce text not null,
    pkce_verifier text not null,
    return_to text not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    constraint pending_external_logins_pkey primary key (handle_hash)
);
-- Purging abandoned sign-ins.
create index pending_external_logins_expires_at_idx on pending_external_logins (expires_at);
