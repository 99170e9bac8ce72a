-- Herald's schema. State enums live in CHECK constraints so that a bad write
-- fails in the database, whatever code path made it.

CREATE TABLE projects (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    -- HS256 secret: signs X-SC-Token and verifies JWTs on the queue API.
    jwt_secret     text NOT NULL,
    -- Standard Webhooks secret, "whsec_" + base64 of 24 random bytes.
    signing_secret text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    project      text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'queue')),
    -- The first characters of the key, so that a person can tell keys apart.
    prefix       text NOT NULL,
    -- SHA-256 of the whole key. The key itself is never stored.
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project, created_at);

CREATE TABLE event_triggers (
    project    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    source     text NOT NULL DEFAULT 'custom' CHECK (source IN ('custom', 'database', 'file')),
    type       text NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    url        text NOT NULL CHECK (url ~* '^https?://'),
    retries    integer NOT NULL DEFAULT 3 CHECK (retries BETWEEN 0 AND 20),
    timeout_ms integer NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 100 AND 300000),
    headers    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    options    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, name)
);
-- Fan-out at enqueue: every enabled trigger of a type.
CREATE INDEX event_triggers_type ON event_triggers (project, type) WHERE enabled;

CREATE TABLE events (
    id              uuid PRIMARY KEY,
    project         text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    type            text NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    data            jsonb NOT NULL DEFAULT 'null',
    deliver_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    synchronous     boolean NOT NULL DEFAULT false,
    idempotency_key text
);
CREATE UNIQUE INDEX events_idempotency ON events (project, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE event_logs (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    project         text NOT NULL,
    trigger_name    text NOT NULL,
    status          text NOT NULL CHECK (status IN
                        ('scheduled', 'pending', 'processing', 'processed', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- Set while a node holds the event log; an expired lease makes it due again.
    lease_until     timestamptz,
    leased_by       uuid,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'processing') = (lease_until IS NOT NULL))
);
-- The claim: due work in due order. Partial, so it holds only live rows and stays small.
CREATE INDEX event_logs_due ON event_logs (next_attempt_at)
    WHERE status IN ('scheduled', 'pending');
-- The lease sweep.
CREATE INDEX event_logs_leased ON event_logs (lease_until) WHERE status = 'processing';
-- The history, newest first, and look-ups by event.
CREATE INDEX event_logs_history ON event_logs (project, created_at DESC, id DESC);
CREATE INDEX event_logs_event ON event_logs (event_id);
CREATE INDEX event_logs_trigger ON event_logs (project, trigger_name, status);

CREATE TABLE invocation_logs (
    id               uuid PRIMARY KEY,
    event_log_id     uuid NOT NULL REFERENCES event_logs (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    status_code      integer,
    request_headers  jsonb NOT NULL,
    request_body     text NOT NULL,
    response_headers jsonb,
    response_body    text,
    error            text
);
CREATE INDEX invocation_logs_event_log ON invocation_logs (event_log_id, started_at);

-- Hot, churning tables: vacuum them early so the partial indexes stay small.
ALTER TABLE event_logs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
