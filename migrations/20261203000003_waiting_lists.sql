-- Lists filtered by status, trigger or type find the logs that wait long
-- (scheduled for later, retrying, or set aside by a disabled trigger or an open
-- circuit) through indexes of their own, newest first, as they find ended ones.
-- Before, they gathered them from the claim's index, which has no project,
-- trigger or type: a filter read the whole backlog of every project, and a
-- million events scheduled for next year made every filtered list slow.
--
-- Fresh pending logs (never attempted, not set aside, due when they were stored)
-- are left out: every event queued while the delivery slots are busy is one, the
-- claims drain them at delivery speed, and three more index entries for each cost
-- batch queueing about 12 %. Lists find them in the claim's index, among the logs
-- due now. A log stored leased (processing) enters none of these either.
CREATE INDEX event_logs_waiting ON event_logs (project, status, created_at DESC, id DESC)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
CREATE INDEX event_logs_waiting_trigger ON event_logs (project, trigger_name, status, created_at DESC, id DESC)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
CREATE INDEX event_logs_waiting_type ON event_logs (project, event_type, status, created_at DESC, id DESC)
    WHERE status = 'scheduled' OR (status = 'pending' AND (attempts > 0 OR paused OR next_attempt_at > created_at));
