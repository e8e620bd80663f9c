-- unspoof store, schema version 23 (postgres): nothing. SQLite's 23 drops its row triggers
-- that kept the hourly rollups (0021) on insert, for a count once per batch by the batch
-- writer (../sqlite/0023_overview_hours_per_batch.sql); PostgreSQL's statement triggers with
-- transition tables already count once per statement and stay. The version exists on both
-- backends because one list of versions (`MIGRATIONS` in src/db.rs) serves both.
SELECT 1;
