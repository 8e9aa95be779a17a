-- Product search: one analysed document per product (stems between spaces, written by the
-- adapter in the transaction of every product and category write), an FTS5 index over it,
-- the vocabulary that typo correction reads, and which analysis built the index.
alter table products add column search_boost integer not null default 0 check (search_boost between -1000 and 1000);
alter table categories add column search_name text not null default '';

-- An integer primary key of its own: FTS5 addresses rows by rowid, and a table's implicit
-- rowid may change on VACUUM.
create table product_search_documents (
    document_id integer primary key,
    product_id blob not null unique references products (id) on delete cascade,
    name text not null,
    category text not null,
    description text not null
) strict;

create virtual table product_search using fts5 (
    name, category, description,
    content = 'product_search_documents', content_rowid = 'document_id', tokenize = 'unicode61'
);

create trigger product_search_documents_ai after insert on product_search_documents begin
    insert into product_search (rowid, name, category, description)
    values (new.document_id, new.name, new.category, new.description);
end;
create trigger product_search_documents_ad after delete on product_search_documents begin
    insert into product_search (product_search, rowid, name, category, description)
    values ('delete', old.document_id, old.name, old.category, old.description);
end;
create trigger product_search_documents_au after update on product_search_documents begin
    insert into product_search (product_search, rowid, name, category, description)
    values ('delete', old.document_id, old.name, old.category, old.description);
    insert into product_search (rowid, name, category, description)
    values (new.document_id, new.name, new.category, new.description);
end;

create table search_words (
    word text primary key not null,
    documents integer not null check (documents > 0)
) strict, without rowid;

create table search_index_state (
    id integer primary key check (id = 1),
    -- The analysis that built the index (`v1:english`); empty until the first build.
    signature text not null,
    -- Grows whenever a word enters or leaves the vocabulary.
    vocabulary_version integer not null
) strict;
insert into search_index_state (id, signature, vocabulary_version) values (1, '', 0);
