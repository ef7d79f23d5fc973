-- The structure of an article (a kind, a section path and a page per paragraph, as JSON text:
-- NULL for a plain article) and, on each passage, its paragraph's section, kind, page and place
-- on that page, which citations show and answers read. Passages with any of them carry an "r2:"
-- checksum that covers them too; existing rows have none and keep their checksums.
ALTER TABLE articles ADD COLUMN IF NOT EXISTS layout text;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS section text;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS kind text;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS page integer;
ALTER TABLE passages ADD COLUMN IF NOT EXISTS page_paragraph integer;
