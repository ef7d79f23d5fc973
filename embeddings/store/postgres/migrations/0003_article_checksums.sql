-- A checksum of each article's metadata (title, byline, date, link: what a citation shows),
-- checked whenever an article is read, as passages are. It is computed as citebot computes it on
-- insert: md5 of the fields joined by the unit separator (chr(31)), a missing field as ''.
-- Passages written from now on carry a checksum of their whole row ("r1:" + md5) in text_md5;
-- older ones keep the checksum of their text, still checked.
ALTER TABLE articles ADD COLUMN IF NOT EXISTS info_md5 text;
UPDATE articles
SET info_md5 = md5(
    id || chr(31) || key || chr(31) || title || chr(31) || coalesce(byline, '') || chr(31)
    || coalesce(date, '') || chr(31) || coalesce(url, '') || chr(31) || coalesce(source, '') || chr(31)
    || content_hash || chr(31) || passage_count::text || chr(31) || added_at
)
WHERE info_md5 IS NULL;
