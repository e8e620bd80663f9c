-- unspoof store, schema version 23 (sqlite): the hourly rollups of 0021 (`overview_hours`) are
-- counted per batch by the writer, not per row by triggers (issue 13, the store's cost per
-- message: the row triggers ran one upsert per record and per reason code, a third more of
-- SQLite's insert work). Keep in step with ../postgres/0023_rollups_per_batch.sql.
--
-- The invariant of 0021 (docs/store.md, "Rollups") still holds: the batch writer
-- (`Db::write_batch`, the only writer of `messages` and `message_reason`, replays included)
-- inserts with `RETURNING`, which returns only the rows actually inserted, and adds their
-- counts in the same transaction (`Rollup` in src/db.rs). Deletes (retention) keep their row
-- triggers: they are rare, and take the counts of exactly the rows deleted.
DROP TRIGGER IF EXISTS overview_hours_message_in;
DROP TRIGGER IF EXISTS overview_hours_reason_in;
