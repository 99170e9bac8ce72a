-- The history in time partitions (SPEC §9, issue 15): events, event_logs and
-- invocation_logs become tables partitioned by the range of their time-ordered ids
-- (UUIDv7: the first 48 bits are the creation time in milliseconds), invocation
-- logs by their event log's id. Retention drops a day's partitions whole instead
-- of deleting their rows (store::partitions); the few rows of a dropped partition
-- that must stay (event logs that have not ended, their attempts and events) move
-- to the default partition first.
--
-- What is already stored stays where it is, without a copy: each table is renamed
-- `<table>_legacy` and attached as the partition of every id before this moment,
-- and retention removes its rows in batches as before, until it is old enough to
-- be dropped whole like the others. Rows whose ids sort after this moment (random
-- UUIDv4 ids from builds before time-ordered ids) move to the default partition,
-- which also holds any row no range partition covers.

-- Every node must stop for this upgrade: a node of an earlier build keeps
-- updating locked event logs by ctid, which is unique only within a partition,
-- and would change rows of every partition at once. A session that used the
-- history in the last minute, other than this one, stops it here.
DO $$
DECLARE
    others bigint;
BEGIN
    SELECT count(*) INTO others FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      AND query ILIKE '%event_logs%' AND query_start > now() - interval '1 minute';
    IF others > 0 THEN
        RAISE EXCEPTION 'stop every Herald node before upgrading to this version: % other database sessions used event_logs in the last minute (this upgrade partitions the history, and a node of an earlier build would update the wrong rows); start the new build once they are gone', others;
    END IF;
END
$$;

-- Idempotency keys were a unique index on events, and a unique index on a
-- partitioned table must hold the partition key. They get a table of their own:
-- a key names the first event queued with it for 24 hours.
CREATE TABLE idempotency_keys (
    project    text NOT NULL,
    key        text NOT NULL,
    event_id   uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, key)
);
INSERT INTO idempotency_keys (project, key, event_id, created_at)
SELECT project, idempotency_key, id, created_at FROM events
WHERE idempotency_key IS NOT NULL AND created_at >= now() - interval '24 hours';
DROP INDEX events_idempotency;

-- The smallest time-ordered id of a moment: its milliseconds, then zeros. The
-- partitions' bounds.
CREATE FUNCTION herald_uuid_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '00000000000000000000')::uuid
$$;

-- The range partitions, one row for the three tables' partitions of one range
-- (`events_<name>`, `event_logs_<name>`, `invocation_logs_<name>`). `lo` NULL is
-- the start of the id space (the legacy partition).
CREATE TABLE history_partitions (
    name  text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,40}$'),
    lo    uuid,
    hi    uuid NOT NULL,
    lo_at timestamptz,
    hi_at timestamptz NOT NULL,
    CHECK (lo IS NULL OR lo < hi)
);

-- The statement trigger that counts ended logs is recreated on the partitioned
-- table below; ctid, which is unique only within one partition, gives way to id.
DROP TRIGGER event_logs_count_ended ON event_logs;

DO $$
DECLARE
    b   uuid := herald_uuid_floor(now());
    t   record;
    ix  record;
    n   bigint;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('events', 'id'), ('event_logs', 'id'), ('invocation_logs', 'event_log_id')) v (tab, key)
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t.tab, t.tab || '_legacy');
        EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', t.tab || '_legacy', t.tab || '_pkey', t.tab || '_legacy_pkey');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (%I)',
                       t.tab, t.tab || '_legacy', t.key);
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', t.tab || '_default', t.tab || '_legacy');
        -- Rows after this moment (UUIDv4 ids) go to the default partition.
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       t.tab || '_legacy', t.key, b, t.tab || '_default');
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %I LIMIT 1) x', t.tab || '_legacy') INTO n;
        IF n = 0 THEN
            EXECUTE format('DROP TABLE %I', t.tab || '_legacy');
        ELSE
            -- With this constraint in place, attaching needs no second scan.
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I < %L)', t.tab || '_legacy', t.tab || '_legacy_bound', t.key, b);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', t.tab, t.tab || '_legacy', b);
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', t.tab || '_legacy', t.tab || '_legacy_bound');
        END IF;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I DEFAULT', t.tab, t.tab || '_default');
    END LOOP;
    IF to_regclass('event_logs_legacy') IS NOT NULL OR to_regclass('events_legacy') IS NOT NULL
       OR to_regclass('invocation_logs_legacy') IS NOT NULL THEN
        -- A table with no rows gets an empty partition of the same range, so the
        -- three stay alike.
        FOR t IN SELECT * FROM (VALUES ('events', 'id'), ('event_logs', 'id'), ('invocation_logs', 'event_log_id')) v (tab, key)
        LOOP
            IF to_regclass(t.tab || '_legacy') IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)', t.tab || '_legacy', t.tab, b);
            END IF;
        END LOOP;
        INSERT INTO history_partitions (name, lo, hi, lo_at, hi_at) VALUES ('legacy', NULL, b, NULL, now());
    END IF;
END
$$;

-- The indexes, on every partition. An index the legacy partition already has is
-- attached, not built again.
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE event_logs ADD PRIMARY KEY (id);
ALTER TABLE invocation_logs ADD PRIMARY KEY (event_log_id, started_at, id);
DO $$
DECLARE
    ix record;
BEGIN
    -- Free the names for the partitioned indexes.
    FOR ix IN SELECT indexname FROM pg_indexes
              WHERE tablename = 'event_logs_legacy' AND indexname LIKE 'event_logs\_%' AND indexname <> 'event_logs_legacy_pkey'
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', ix.indexname, ix.indexname || '_legacy');
    END LOOP;
END
$$;
CREATE INDEX event_logs_due ON event_logs (next_attempt_at)
    WHERE status IN ('scheduled', 'pending') AND NOT paused;
CREATE INDEX event_logs_leased ON event_logs (lease_until) WHERE status = 'processing';
CREATE INDEX event_logs_event ON event_logs (event_id);
CREATE INDEX event_logs_paused ON event_logs (project, trigger_name) WHERE paused;
CREATE INDEX event_logs_untyped ON event_logs (id) WHERE event_type = '';
CREATE INDEX event_logs_ordering ON event_logs (trigger_id, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND status IN ('scheduled', 'pending', 'processing');
CREATE INDEX event_logs_held ON event_logs (trigger_id, next_attempt_at) WHERE held;
CREATE INDEX event_logs_paused_due ON event_logs (trigger_id, next_attempt_at) WHERE paused AND NOT key_wait;
CREATE INDEX event_logs_history ON event_logs (project, created_at, id);
CREATE INDEX event_logs_ended ON event_logs (project, status, created_at, id)
    WHERE status IN ('processed', 'failed', 'cancelled');
CREATE INDEX event_logs_ended_trigger ON event_logs (project, trigger_name, status, created_at, id)
    WHERE status IN ('processed', 'failed', 'cancelled');
CREATE INDEX event_logs_ended_type ON event_logs (project, event_type, status, created_at, id)
    WHERE status IN ('processed', 'failed', 'cancelled');
CREATE INDEX event_logs_waiting ON event_logs (project, status, created_at, id)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
CREATE INDEX event_logs_waiting_trigger ON event_logs (project, trigger_name, status, created_at, id)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
CREATE INDEX event_logs_waiting_type ON event_logs (project, event_type, status, created_at, id)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
-- Partitions that can never hold an untyped log (made by this build) still carry
-- event_logs_untyped: it stays empty and costs nothing.

-- No plan looks at these values (see the lean indexes migration).
ALTER TABLE events ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE event_logs ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE events_default ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE event_logs_default ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE events_default SET (autovacuum_vacuum_scale_factor = 0.01);
ALTER TABLE event_logs_default SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE invocation_logs_default SET (autovacuum_vacuum_scale_factor = 0.01);

CREATE OR REPLACE FUNCTION herald_count_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The update below fires this trigger again; it changes no status.
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    -- Most statements end nothing and bring nothing back (claims, lease renewals,
    -- setting logs aside): nothing to count, and no key whose next log is due.
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE status IN ('processed', 'failed', 'cancelled'))
       AND NOT EXISTS (SELECT 1 FROM old_rows WHERE status IN ('processed', 'failed', 'cancelled')) THEN
        RETURN NULL;
    END IF;
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

    IF NOT EXISTS (SELECT 1 FROM old_rows WHERE ordering_key IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    UPDATE event_logs l SET paused = false, key_wait = false, updated_at = now()
    FROM (
        SELECT DISTINCT o.trigger_id, o.ordering_key
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.ordering_key IS NOT NULL AND o.trigger_id IS NOT NULL
          AND o.status IN ('scheduled', 'pending', 'processing') AND n.status IN ('processed', 'failed', 'cancelled')
    ) ended
    CROSS JOIN LATERAL (
        SELECT w.id FROM event_logs w
        WHERE w.trigger_id = ended.trigger_id AND w.ordering_key = ended.ordering_key AND w.key_wait
          AND w.status IN ('scheduled', 'pending', 'processing')
        ORDER BY w.event_id LIMIT 1
    ) next
    WHERE l.id = next.id;
    IF FOUND THEN
        PERFORM pg_notify('herald_wake', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_logs_count_ended AFTER UPDATE ON event_logs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_count_ended();
