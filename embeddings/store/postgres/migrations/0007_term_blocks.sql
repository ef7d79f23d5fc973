-- Each term's postings packed per block of 4,096 consecutive passage ids (embeddings.store.common
-- .BLOCK_BITS = 12): a question reads a few rows per term instead of one row per posting, which at
-- a million passages means over 100,000 rows for a common word. Columns are big-endian arrays,
-- int8 passage ids and int4 term frequencies and passage lengths, as int8send/int4send write them.
-- The postings table stays: writes find a removed passage's terms there.
CREATE TABLE IF NOT EXISTS term_blocks (
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    term text NOT NULL,
    block bigint NOT NULL,
    pids bytea NOT NULL,
    tfs bytea NOT NULL,
    lengths bytea NOT NULL,
    PRIMARY KEY (library_id, term, block)
);

INSERT INTO term_blocks (library_id, term, block, pids, tfs, lengths)
SELECT library_id, term, passage_id >> 12,
       string_agg(int8send(passage_id), ''::bytea ORDER BY passage_id),
       string_agg(int4send(tf), ''::bytea ORDER BY passage_id),
       string_agg(int4send(length), ''::bytea ORDER BY passage_id)
FROM postings
GROUP BY library_id, term, passage_id >> 12;
