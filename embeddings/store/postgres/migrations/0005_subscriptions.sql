-- Feeds and sitemaps a library follows (citebot subscribe), one row each: the address and the
-- state of the last sync (validators for conditional requests, the pages it brought in), as
-- JSON text written and read by citebot.
CREATE TABLE IF NOT EXISTS subscriptions (
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    url text NOT NULL,
    state text NOT NULL,
    PRIMARY KEY (library_id, url)
);
