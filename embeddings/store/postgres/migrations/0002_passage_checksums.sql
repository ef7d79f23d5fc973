-- A checksum of each passage's text, checked whenever a passage is read: a quote is the
-- source, so text altered inside the database is refused instead of quoted. Existing passages
-- get theirs from the text they hold now (md5, as citebot computes it on insert).
ALTER TABLE passages ADD COLUMN IF NOT EXISTS text_md5 text;
UPDATE passages SET text_md5 = md5(text) WHERE text_md5 IS NULL;
