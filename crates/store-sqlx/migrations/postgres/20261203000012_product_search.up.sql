-- Product search: one analysed document per product (stems between spaces, written by the
-- adapter in the transaction of every product and category write), a weighted tsvector over
-- it with a GIN index, the vocabulary that typo correction reads, and which analysis built
-- the index. The 'simple' configuration only splits: the adapter has already folded and
-- stemmed, the same way as for SQLite.
alter table products add column search_boost integer not null default 0
    constraint products_search_boost_check check (search_boost between -1000 and 1000);
alter table categories add column search_name text not null default '';

create table product_search_documents (
    product_id uuid primary key references products (id) on delete cascade,
    name text not null,
    category text not null,
    description text not null,
    document tsvector generated always as (
        setweight(to_tsvector('simple'::regconfig, name), 'A')
        || setweight(to_tsvector('simple'::regconfig, category), 'B')
        || setweight(to_tsvector('simple'::regconfig, description), 'C')
    ) stored
);
create index product_search_documents_document_idx on product_search_documents using gin (document);

create table search_words (
    word text primary key,
    documents bigint not null check (documents > 0)
);

create table search_index_state (
    id integer primary key check (id = 1),
    -- The analysis that built the index (`v1:english`); empty until the first build.
    signature text not null,
    -- Grows whenever a word enters or leaves the vocabulary.
    vocabulary_version bigint not null
);
insert into search_index_state (id, signature, vocabulary_version) values (1, '', 0);
