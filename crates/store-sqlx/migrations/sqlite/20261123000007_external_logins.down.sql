-- Accounts created through a provider stay, without their links to it; pending sign-ins are
-- lost (their callbacks then fail as expired ones do).
drop table if exists pending_external_logins;
drop table if exists external_identities;
