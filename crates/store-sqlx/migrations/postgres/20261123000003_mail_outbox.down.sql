drop table if exists mail_outbox;
