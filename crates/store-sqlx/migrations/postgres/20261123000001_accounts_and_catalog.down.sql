drop table if exists products;
drop table if exists categories;
drop table if exists api_tokens;
drop table if exists sessions;
drop table if exists users;
drop function if exists set_updated_at();
drop type if exists product_status;
drop type if exists user_role;
