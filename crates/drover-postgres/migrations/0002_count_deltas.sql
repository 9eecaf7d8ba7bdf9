-- Count changes of jobs inserted inside an application's own transaction
-- (`PgStore::job_insert_many_in`, ADR 0009). Such a transaction may stay
-- open for as long as the application likes; updating `queue_counts` in it
-- would hold that queue's count rows locked meanwhile and stall every
-- claim and finish of the queue. Plain inserts here lock nothing that
-- others need. Reads add these rows to `queue_counts`; maintenance folds
-- them in and deletes them.
CREATE TABLE queue_count_deltas (
    id    bigserial PRIMARY KEY,
    queue text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL
);
