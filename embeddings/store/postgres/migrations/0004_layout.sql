-- The structure of an article (a kind and a section path per paragraph, as JSON text: NULL for a
-- plain article) and, on each passage, its paragraph's section and kind, which citations show and
-- answers read. Passages with either carry an "r2:" checksum that covers them too; existing rows
-- have neither and keep their checksums.
ALTER TABLE articles ADD COLUMN IF NOT EXISTS layout text;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS section text;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS kind text;
