-- Each term's postings packed per block of 4,096 consecutive passage ids (embeddings.store.common
-- .BLOCK_BITS = 12): a question reads a few rows per term instead of one row per posting, which at
-- a million passages means over 100,000 rows for a common word. Each column is an array of
-- big-endian unsigned 16-bit numbers (the last two bytes of int4send): a posting's passage id less
-- the block's first, its term frequency, its passage's length (counts above 65,535 are stored as
-- 65,535, as citebot writes them). Stored uncompressed: reading them is most of BM25's time, and
-- they are already compact. The postings table stays: writes find a removed passage's terms there.
CREATE TABLE IF NOT EXISTS term_blocks (
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    term text NOT NULL,
    block bigint NOT NULL,
    offsets bytea NOT NULL,
    tfs bytea NOT NULL,
    lengths bytea NOT NULL,
    PRIMARY KEY (library_id, term, block)
);
ALTER TABLE term_blocks
    ALTER COLUMN offsets SET STORAGE EXTERNAL,
    ALTER COLUMN tfs SET STORAGE EXTERNAL,
    ALTER COLUMN lengths SET STORAGE EXTERNAL;

INSERT INTO term_blocks (library_id, term, block, offsets, tfs, lengths)
SELECT library_id, term, passage_id >> 12,
       string_agg(substring(int4send((passage_id & 4095)::int4) FROM 3 FOR 2), ''::bytea ORDER BY passage_id),
       string_agg(substring(int4send(least(tf, 65535)) FROM 3 FOR 2), ''::bytea ORDER BY passage_id),
       string_agg(substring(int4send(least(length, 65535)) FROM 3 FOR 2), ''::bytea ORDER BY passage_id)
FROM postings
GROUP BY library_id, term, passage_id >> 12;
