-- The catalog's cache generation: bumped in the transaction of every write to products or
-- categories, whoever writes them, so every instance's poll sees that its cached catalog
-- reads are stale once the write has committed. SQLite has one writer, so one slot serves.
create table cache_generations (
    family text not null,
    slot integer not null,
    generation integer not null default 0,
    primary key (family, slot)
) strict;
insert into cache_generations (family, slot) values ('catalog', 0);

create trigger products_cache_generation_ai after insert on products begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
create trigger products_cache_generation_au after update on products begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
create trigger products_cache_generation_ad after delete on products begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
create trigger categories_cache_generation_ai after insert on categories begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
create trigger categories_cache_generation_au after update on categories begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
create trigger categories_cache_generation_ad after delete on categories begin
    update cache_generations set generation = generation + 1 where family = 'catalog' and slot = 0;
end;
