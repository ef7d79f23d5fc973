-- Small pieces of library state kept for the front ends (a server's settings, logged questions,
-- pins, the date a server removed the bot): JSON text written and read by citebot, one row per
-- kind and key. "user" names whose record it is, so a member's data can be listed and erased.
CREATE TABLE IF NOT EXISTS records (
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    kind text NOT NULL,
    key text NOT NULL,
    "user" text NOT NULL,
    at text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (library_id, kind, key)
);
CREATE INDEX IF NOT EXISTS records_user ON records (library_id, "user");
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (library_id, "user");
