-- Lists filtered by status, trigger or type find the waiting logs (scheduled or
-- pending, set aside or not) through indexes of their own, newest first, as they
-- find ended ones. Before, they gathered them from the claim's index, which has
-- no project, trigger or type: a filter read the whole backlog of every project,
-- and a million events scheduled for next year made every filtered list slow.
--
-- A log queued while this node has a free delivery slot is stored leased
-- (processing) and never enters these indexes: they cost the hot path nothing,
-- only logs that wait (scheduled, backlog, retries) get entries.
CREATE INDEX event_logs_waiting ON event_logs (project, status, created_at DESC, id DESC)
    WHERE status IN ('scheduled', 'pending');
CREATE INDEX event_logs_waiting_trigger ON event_logs (project, trigger_name, status, created_at DESC, id DESC)
    WHERE status IN ('scheduled', 'pending');
CREATE INDEX event_logs_waiting_type ON event_logs (project, event_type, status, created_at DESC, id DESC)
    WHERE status IN ('scheduled', 'pending');
