-- GET /v1/threads pages newest first by (created_at, id): these let each page be read from
-- an index instead of sorting every matching thread (all of them, or one store's).
CREATE INDEX threads_created ON threads (created_at, id);
CREATE INDEX threads_store_created ON threads (store_id, created_at, id);
