-- Retention (SPEC §9): ended event logs older than their project's retention,
-- their invocation logs and the events left without any event log are removed.
ALTER TABLE projects ADD COLUMN retention_days integer NOT NULL DEFAULT 30
    CHECK (retention_days BETWEEN 1 AND 3650);
