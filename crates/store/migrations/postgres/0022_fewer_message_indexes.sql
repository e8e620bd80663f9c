-- unspoof store, schema version 22 (postgres): fewer indexes on messages. Every record is
-- inserted into each of them (issue 13, the store's cost per message), so only those a query
-- reads stay (tested: `every_index_on_messages_serves_a_query` in src/db.rs). Keep in step
-- with ../sqlite/0022_fewer_message_indexes.sql. (21 is the console's.)

-- messages_time_action (received_at, action) begins with received_at: it serves the time
-- ranges and the newest-first order as well.
DROP INDEX IF EXISTS messages_received_at;
-- No query looks messages up by their session (a message points to its session, not back).
DROP INDEX IF EXISTS messages_session_id;
-- The searches by a verdict other than accept read this one (`Query::where_clause` writes out
-- the `action <> 'accept'` that lets a planner use it); the accepts, nine records in ten, are
-- not in it, and a search for them walks messages_time_action, where most records match.
DROP INDEX IF EXISTS messages_action;
CREATE INDEX messages_action_not_accept ON messages (action, received_at) WHERE action <> 'accept';
-- message_reason_code_time_message (code, received_at, message) begins with it.
DROP INDEX IF EXISTS message_reason_code;
