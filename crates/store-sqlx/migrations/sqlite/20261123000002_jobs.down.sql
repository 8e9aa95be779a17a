drop table if exists job_schedules;
drop table if exists jobs;
