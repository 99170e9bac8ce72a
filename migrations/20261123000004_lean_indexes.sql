-- Fewer index entries per delivery. Every row version of an event log that is not
-- a HOT update gets an entry in each of its indexes, so each index on the hot
-- tables costs a B-tree insert per insert and per status change.
--
-- event_logs_trigger held every event log not yet processed, only to find a
-- trigger's open logs when it is deleted and its failed logs to replay them. The
-- open ones (scheduled, pending, processing) are already in event_logs_due and
-- event_logs_leased; the failed ones, few, get an index of their own.
DROP INDEX event_logs_trigger;
CREATE INDEX event_logs_failed ON event_logs (project, trigger_name, created_at) WHERE status = 'failed';

-- Invocation logs are read by event log, oldest first, never by id alone: one
-- index serves both the reads and uniqueness.
ALTER TABLE invocation_logs DROP CONSTRAINT invocation_logs_pkey;
DROP INDEX invocation_logs_event_log;
ALTER TABLE invocation_logs ADD PRIMARY KEY (event_log_id, started_at, id);

-- Herald analyzes the queue tables as they grow (store::refresh_statistics). No
-- plan looks at the distribution of event data or of error texts, and sorting
-- sampled JSON values made most of each ANALYZE's cost: a CPU burst every few
-- seconds while a table doubles.
ALTER TABLE events ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE event_logs ALTER COLUMN last_error SET STATISTICS 0;
