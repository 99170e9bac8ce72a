-- Round 2, trust rules (SPEC §8).

-- A disabled trigger is paused: its undelivered event logs keep their status but
-- are set aside, out of the claim's index, so that a large paused backlog costs
-- the claim nothing. The claim sets `paused` when it meets a log whose trigger is
-- disabled; enabling the trigger clears it (served by event_logs_paused).
ALTER TABLE event_logs ADD COLUMN paused boolean NOT NULL DEFAULT false;
DROP INDEX event_logs_due;
CREATE INDEX event_logs_due ON event_logs (next_attempt_at)
    WHERE status IN ('scheduled', 'pending') AND NOT paused;
CREATE INDEX event_logs_paused ON event_logs (project, trigger_name) WHERE paused;

-- A trigger's identity is its id, not its name: a trigger deleted and created
-- again under the same name is another trigger, and the event logs of the first
-- (another type, another receiver) never go to the second's URL. Logs stored
-- before this migration have no trigger id; they belong to the trigger of their
-- name only if it existed when they were created.
ALTER TABLE event_triggers ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX event_triggers_id ON event_triggers (id);
ALTER TABLE event_logs ADD COLUMN trigger_id uuid;

-- A file intent belongs to the node that started the operation: only that node's
-- disk tells whether it happened, so only that node settles it (unless it was
-- staged, which the database alone tells).
ALTER TABLE file_intents ADD COLUMN node uuid;

-- Database grants: a project may watch tables only in the database aliases granted
-- to it. `default` (Herald's own database) is granted to the project `default`;
-- every other grant is an operator's (`herald database grant`, or Mission
-- Control). Database triggers of other projects stop capturing until granted.
CREATE TABLE database_grants (
    project    text NOT NULL CHECK (project ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    alias      text NOT NULL CHECK (alias ~ '^[a-z0-9_-]{1,63}$'),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, alias)
);
INSERT INTO database_grants (project, alias) VALUES ('default', 'default');
-- The operator's own project keeps the aliases its database triggers use; other
-- projects' triggers wait for a grant (Herald names them in its log at start).
INSERT INTO database_grants (project, alias)
    SELECT DISTINCT project, options->>'db' FROM event_triggers
    WHERE source = 'database' AND project = 'default' AND options->>'db' IS NOT NULL
      AND options->>'db' ~ '^[a-z0-9_-]{1,63}$'
ON CONFLICT DO NOTHING;
