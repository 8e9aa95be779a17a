-- The catalog's cache generation: bumped in the transaction of every write to products or
-- categories, whoever writes them, so every instance's poll sees that its cached catalog
-- reads are stale once the write has committed. The poll reads the sum of 16 slots; a
-- transaction bumps the slot of its backend, so concurrent writers rarely share a row. The
-- triggers are deferred to commit: the slot's row lock is the last one a transaction takes
-- and is held only while it commits, so it cannot take part in a deadlock with product rows.
create table cache_generations (
    family text not null,
    slot integer not null,
    generation bigint not null default 0,
    primary key (family, slot)
);
insert into cache_generations (family, slot) select 'catalog', slot from generate_series(0, 15) as slot;

create function bump_catalog_cache_generation() returns trigger language plpgsql as $$
begin
    update cache_generations set generation = generation + 1
    where family = 'catalog' and slot = pg_backend_pid() % 16;
    return null;
end
$$;

create constraint trigger products_cache_generation after insert or update or delete on products
    deferrable initially deferred for each row execute function bump_catalog_cache_generation();
create constraint trigger categories_cache_generation after insert or update or delete on categories
    deferrable initially deferred for each row execute function bump_catalog_cache_generation();
