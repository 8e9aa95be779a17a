drop index audit_log_target;
drop index audit_log_at;
drop table audit_log;
delete from cache_generations where family = 'flags';
drop table feature_flags;
