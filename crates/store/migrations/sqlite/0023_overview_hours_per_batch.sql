-- unspoof store, schema version 23 (sqlite): the console's hourly rollups (0021) are counted
-- once per batch by the batch writer instead of by a row trigger per inserted row (issue 13,
-- the store's CPU per message: the insert triggers were 28 % of SQLite's instructions per
-- message on the gateway's records, about five upserts into overview_hours a message;
-- docs/benchmarks.md). `Db::write_batch`, the only writer of messages and message_reason, adds
-- the counts of the rows its transaction inserted, with one upsert (docs/store.md,
-- "Rollups"). The invariant of 0021 is unchanged; the delete triggers stay (retention).
-- Keep in step with ../postgres/0023_overview_hours_per_batch.sql (a no-op: PostgreSQL's
-- statement triggers already count once per statement).
DROP TRIGGER IF EXISTS overview_hours_message_in;
DROP TRIGGER IF EXISTS overview_hours_reason_in;
