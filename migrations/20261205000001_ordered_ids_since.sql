-- Since when every event log's id is time-ordered (UUIDv7, the moment its row was
-- stored). Builds before time-ordered ids gave random ones (UUIDv4); the partitions'
-- migration put such rows in the legacy partition (ids before the upgrade) or the
-- default one (ids after it), and every one of them was created before that
-- migration ran. The history list bounds its reads by id only for logs created
-- since then (src/store/history.rs, `Windows`). No row: every id is time-ordered
-- (a database created by a build with time-ordered ids, or whose older rows are gone).
CREATE TABLE history_ordered_since (
    at timestamptz NOT NULL
);
INSERT INTO history_ordered_since (at)
SELECT m.installed_on FROM _sqlx_migrations m
WHERE m.version = 20261204000001
  AND (EXISTS (SELECT 1 FROM history_partitions WHERE lo IS NULL)
       OR EXISTS (SELECT 1 FROM event_logs_default WHERE substr(id::text, 15, 1) <> '7'));
