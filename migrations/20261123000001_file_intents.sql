-- The file store's write-ahead record (SPEC §5). A row is written before a file
-- operation touches the disk ('intent'), marked 'staged' once the disk holds the
-- result, and deleted in the same transaction that queues its FILE_CREATE or
-- FILE_DELETE event. Rows left by a crash are settled by the reconciler.
CREATE TABLE file_intents (
    id         uuid PRIMARY KEY,
    project    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    op         text NOT NULL CHECK (op IN ('create', 'delete')),
    kind       text NOT NULL CHECK (kind IN ('file', 'folder')),
    -- The store path, "/a/b.txt".
    path       text NOT NULL,
    -- Where an upload waits before its rename into place.
    tmp_path   text,
    meta       jsonb NOT NULL DEFAULT '{}',
    status     text NOT NULL DEFAULT 'intent' CHECK (status IN ('intent', 'staged')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_intents_age ON file_intents (created_at);
