-- The kept counts get a shard, so that two transactions that end logs at once do
-- not queue on the same count rows. The completer's writers each count into a
-- shard of their own (they set herald.count_shard for their statement); every
-- other statement counts into shard 0. Before, the second of a node's two
-- completion writers waited on the first one's row locks until its commit (WAL
-- flush included), which made them take turns. Readers sum over the shards, and
-- retention folds the shards of buckets older than two hours back into shard 0.
ALTER TABLE event_log_counts ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE event_log_counts DROP CONSTRAINT event_log_counts_pkey,
    ADD PRIMARY KEY (project, span, bucket, status, shard);

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
    INSERT INTO event_log_counts (project, span, bucket, status, shard, n)
    SELECT c.project, s.span, s.bucket, c.status,
           COALESCE(NULLIF(current_setting('herald.count_shard', true), ''), '0')::smallint, sum(c.d)
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
    ON CONFLICT (project, span, bucket, status, shard) DO UPDATE SET n = event_log_counts.n + excluded.n;

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
