-- Round 2, flow control and endpoint health (SPEC §10).

-- Per-trigger limits. Both hold for all nodes together: each node starts a
-- trigger's deliveries only within the share of them it holds in flow_credits.
ALTER TABLE event_triggers
    ADD COLUMN rate_limit double precision
        CHECK (rate_limit IS NULL OR (rate_limit >= 0.01 AND rate_limit <= 100000)),
    ADD COLUMN max_in_flight integer NOT NULL DEFAULT 256
        CHECK (max_in_flight BETWEEN 1 AND 10000),
    -- The circuit breaker. Open while circuit_opened_at is set: the trigger's due
    -- event logs are set aside (`paused`, as for a disabled trigger) and one probe
    -- goes out at circuit_probe_at, then each minute. A successful probe closes
    -- it; only attempts after circuit_closed_at can open it again.
    ADD COLUMN circuit_opened_at timestamptz,
    ADD COLUMN circuit_reason text,
    ADD COLUMN circuit_probe_at timestamptz,
    ADD COLUMN circuit_closed_at timestamptz,
    -- Why Herald disabled the trigger by itself (a circuit open for 3 days); NULL
    -- when an operator disabled it, or it is enabled.
    ADD COLUMN disabled_reason text;
CREATE INDEX event_triggers_circuit ON event_triggers (circuit_probe_at) WHERE circuit_opened_at IS NOT NULL;

-- Ordering keys: per trigger, the event logs of one key are delivered one at a
-- time, in the order their events were queued. The claim takes a keyed log only
-- when no earlier log of its key and trigger is still live; this index answers
-- that, and holds only live keyed logs.
ALTER TABLE events ADD COLUMN ordering_key text CHECK (length(ordering_key) BETWEEN 1 AND 256);
ALTER TABLE event_logs ADD COLUMN ordering_key text;
CREATE INDEX event_logs_ordering ON event_logs (trigger_id, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND status IN ('scheduled', 'pending', 'processing');

-- The share of each trigger's limits a node holds: it starts at most `slots`
-- deliveries at once and `rate` per second. Under flow_credits' advisory lock,
-- no node takes more than the others have left, so the shares of live nodes
-- never add up to more than the trigger's limits. A node renews its rows every
-- second; rows not renewed for 10 s belong to a node that is gone.
CREATE TABLE flow_credits (
    trigger_id uuid NOT NULL,
    node       uuid NOT NULL,
    slots      integer NOT NULL CHECK (slots >= 0),
    rate       double precision NOT NULL CHECK (rate >= 0),
    -- The node has deliveries of this trigger waiting for a share.
    wants      boolean NOT NULL,
    renewed_at timestamptz NOT NULL,
    PRIMARY KEY (trigger_id, node)
);

-- Attempts per trigger in 10-second buckets, written by each node once a second
-- from what it counted in memory: the circuit breaker and the triggers' health
-- column read these, never the history.
CREATE TABLE trigger_stats (
    trigger_id uuid NOT NULL,
    bucket     timestamptz NOT NULL,
    attempts   integer NOT NULL,
    failures   integer NOT NULL,
    -- Attempts by duration, one count per bound of flow::DURATION_BOUNDS_MS.
    durations  integer[] NOT NULL,
    last_error text,
    PRIMARY KEY (trigger_id, bucket)
);
ALTER TABLE trigger_stats SET (autovacuum_vacuum_scale_factor = 0.05);


-- Due event logs of a trigger whose deliveries already wait on some node for the
-- trigger's limits are set aside too (`paused` and `held`), so that a large
-- backlog of a limited trigger costs the other triggers' claims nothing. The
-- nodes with room for the trigger take them back from here, oldest first.
ALTER TABLE event_logs ADD COLUMN held boolean NOT NULL DEFAULT false;
CREATE INDEX event_logs_held ON event_logs (trigger_id, next_attempt_at) WHERE held;

-- Only the head of each ordering key is claimable: a keyed event log queued while
-- an earlier one of its key and trigger is live waits set aside (`paused` and
-- `key_wait`), out of the claim's index, and the end of the log before it (the
-- row trigger below, whichever path ends it) makes it due. So a key with a
-- million events waiting costs the claims nothing.
ALTER TABLE event_logs ADD COLUMN key_wait boolean NOT NULL DEFAULT false;
-- A probe takes the oldest due log its open circuit set aside, without sorting
-- all of them (there may be millions after a long outage).
CREATE INDEX event_logs_paused_due ON event_logs (trigger_id, next_attempt_at) WHERE paused AND NOT key_wait;

-- The end of a keyed log makes the next of its key due. This is done in the
-- statement-level trigger that already keeps the counts of ended logs (one pass
-- over the statement's transition tables, whichever path ended the logs).
CREATE OR REPLACE FUNCTION herald_count_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The update below fires this trigger again; it changes no status.
    IF pg_trigger_depth() > 1 THEN
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
        SELECT w.ctid FROM event_logs w
        WHERE w.trigger_id = ended.trigger_id AND w.ordering_key = ended.ordering_key AND w.key_wait
          AND w.status IN ('scheduled', 'pending', 'processing')
        ORDER BY w.event_id LIMIT 1
    ) next
    WHERE l.ctid = next.ctid;
    IF FOUND THEN
        PERFORM pg_notify('herald_wake', '');
    END IF;
    RETURN NULL;
END
$$;
