-- History reads that do not grow with the history (SPEC §9).
--
-- 1. Counts of ended event logs per project, status and creation time, at two
--    spans: per minute (kept two days, for windows under a day) and per hour
--    (kept as long as the history). The Event Logs page's counts and chart add up
--    at most a few thousand of these rows instead of scanning event logs.
--
--    A statement-level trigger keeps them: every UPDATE of event_logs that moves
--    logs into or out of an ended status (processed, failed, cancelled) adds or
--    takes away their counts, in the same transaction, with one upsert per
--    statement however many rows it changed. Event logs are inserted before they
--    end, so inserts need no trigger; retention removes counts with the logs.
CREATE TABLE event_log_counts (
    project text NOT NULL,
    span    text NOT NULL CHECK (span IN ('minute', 'hour')),
    bucket  timestamptz NOT NULL,
    status  text NOT NULL CHECK (status IN ('processed', 'failed', 'cancelled')),
    n       bigint NOT NULL,
    PRIMARY KEY (project, span, bucket, status)
);

-- An event log carries its event's type, so that filtering the history by type
-- (alone or with a status) has an index of its own. Adding the column with a
-- constant default changes only the catalog (no rewrite, no long lock), and a
-- node of the previous build, which does not write it, keeps working during a
-- rolling upgrade. The logs stored before (type '') get their event's type from
-- a background pass in batches (event_logs_untyped finds them; new logs never
-- enter it).
ALTER TABLE event_logs ADD COLUMN event_type text NOT NULL DEFAULT '';
CREATE INDEX event_logs_untyped ON event_logs (id) WHERE event_type = '';

-- Buckets are cut in UTC whatever the session's time zone.
CREATE FUNCTION herald_count_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_log_counts (project, span, bucket, status, n)
    SELECT c.project, s.span, s.bucket, c.status, sum(c.d)
    FROM (
        SELECT n.project, n.created_at, n.status, 1 AS d
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IN ('processed', 'failed', 'cancelled') AND n.status <> o.status
        UNION ALL
        SELECT o.project, o.created_at, o.status, -1
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IN ('processed', 'failed', 'cancelled') AND n.status <> o.status
    ) c
    CROSS JOIN LATERAL (VALUES
        ('minute', date_bin('1 minute', c.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')),
        ('hour', date_bin('1 hour', c.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'))) AS s (span, bucket)
    GROUP BY 1, 2, 3, 4
    HAVING sum(c.d) <> 0
    -- One order for every writer, so two transactions never wait on each other's rows in a circle.
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (project, span, bucket, status) DO UPDATE SET n = event_log_counts.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_logs_count_ended AFTER UPDATE ON event_logs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_count_ended();

-- The counts of the history already there.
INSERT INTO event_log_counts (project, span, bucket, status, n)
SELECT project, 'hour', date_bin('1 hour', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
FROM event_logs WHERE status IN ('processed', 'failed', 'cancelled') GROUP BY 1, 2, 3, 4;
INSERT INTO event_log_counts (project, span, bucket, status, n)
SELECT project, 'minute', date_bin('1 minute', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status, count(*)
FROM event_logs
WHERE status IN ('processed', 'failed', 'cancelled') AND created_at >= now() - interval '2 days'
GROUP BY 1, 2, 3, 4;

-- 2. Every list filter finds its first page through an index, newest first.
--    Ended logs (nearly all of the history) are found by status, by trigger and
--    by type through partial indexes, which get one entry per event log, when it
--    ends; live ones through the claim's own indexes (their number is the
--    backlog, not the history).
CREATE INDEX event_logs_ended ON event_logs (project, status, created_at DESC, id DESC)
    WHERE status IN ('processed', 'failed', 'cancelled');
CREATE INDEX event_logs_ended_trigger ON event_logs (project, trigger_name, status, created_at DESC, id DESC)
    WHERE status IN ('processed', 'failed', 'cancelled');
-- The failed logs' index is covered by event_logs_ended_trigger.
DROP INDEX event_logs_failed;
CREATE INDEX event_logs_ended_type ON event_logs (project, event_type, status, created_at DESC, id DESC)
    WHERE status IN ('processed', 'failed', 'cancelled');

-- A time-ordered id of a given moment (herald_uuid_v7 is the current moment's),
-- for loading history with the ids it would have had.
CREATE FUNCTION herald_uuid_at(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Retention removes history every minute: autovacuum should hand the space back
-- to new rows soon after, as it already does for event_logs, rather than wait
-- until a fifth of the table is dead (the default), which lets the attempts and
-- the events grow by that much before their space is reused.
ALTER TABLE invocation_logs SET (autovacuum_vacuum_scale_factor = 0.01);
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01);
