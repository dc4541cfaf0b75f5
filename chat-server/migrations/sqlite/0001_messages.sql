-- Chat history: one row per message, keyed by (room, seq) so that a retried
-- group commit is idempotent and every history query is an index range scan.
CREATE TABLE IF NOT EXISTS messages (
    room      TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    user_name TEXT   NOT NULL,
    body      TEXT   NOT NULL,
    ts        BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);
