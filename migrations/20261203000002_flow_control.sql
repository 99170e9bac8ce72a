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

CREATE FUNCTION herald_next_of_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE event_logs SET paused = false, key_wait = false, updated_at = now()
    WHERE ctid = (SELECT ctid FROM event_logs
                  WHERE trigger_id = OLD.trigger_id AND ordering_key = OLD.ordering_key AND key_wait
                    AND status IN ('scheduled', 'pending', 'processing')
                  ORDER BY event_id LIMIT 1);
    IF FOUND THEN
        PERFORM pg_notify('herald_wake', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_logs_next_of_key AFTER UPDATE OF status ON event_logs FOR EACH ROW
    WHEN (OLD.ordering_key IS NOT NULL AND OLD.trigger_id IS NOT NULL
          AND OLD.status IN ('scheduled', 'pending', 'processing')
          AND NEW.status IN ('processed', 'failed', 'cancelled'))
    EXECUTE FUNCTION herald_next_of_key();
