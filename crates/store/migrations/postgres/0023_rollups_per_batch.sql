-- unspoof store, schema version 23 (postgres): nothing to change. On SQLite this version drops
-- the row triggers that counted each inserted record into `overview_hours` (the batch writer
-- counts them per batch); PostgreSQL's statement triggers of 0021 already count per batch
-- (one upsert per key of a statement) and stay. Keep in step with
-- ../sqlite/0023_rollups_per_batch.sql.
SELECT 1;
