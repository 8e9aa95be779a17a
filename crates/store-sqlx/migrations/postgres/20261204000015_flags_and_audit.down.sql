drop table audit_log;
delete from cache_generations where family = 'flags';
drop table feature_flags;
