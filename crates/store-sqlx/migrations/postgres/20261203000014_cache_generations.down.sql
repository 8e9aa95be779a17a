drop trigger categories_cache_generation on categories;
drop trigger products_cache_generation on products;
drop function bump_catalog_cache_generation();
drop table cache_generations;
