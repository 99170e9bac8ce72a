-- The hot path: every event writes an events row, an event_logs row per trigger
-- and an invocation_logs row per attempt.
--
-- Foreign keys on these rows cost a lookup and a row lock per row, and every
-- concurrent enqueue locked the same projects row. Herald never deletes projects,
-- events or event logs, so their cascades never ran. The links are kept by the
-- code instead: an event is only stored for a project that authenticated, an event
-- log only in the statement that inserts its event, and an invocation log only for
-- an event log this node leases.
ALTER TABLE events DROP CONSTRAINT events_project_fkey;
ALTER TABLE event_logs DROP CONSTRAINT event_logs_event_id_fkey;
ALTER TABLE invocation_logs DROP CONSTRAINT invocation_logs_event_log_id_fkey;

-- Event logs are looked up by trigger to cancel the open ones (trigger deleted)
-- and to retry the failed ones, never the processed ones, which are most of them:
-- leaving those out spares an index entry per delivery.
DROP INDEX event_logs_trigger;
CREATE INDEX event_logs_trigger ON event_logs (project, trigger_name, status) WHERE status <> 'processed';
