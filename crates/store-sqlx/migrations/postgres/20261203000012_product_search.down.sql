drop table search_index_state;
drop table search_words;
drop table product_search_documents;
alter table categories drop column search_name;
alter table products drop column search_boost;
