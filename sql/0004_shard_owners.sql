-- Who consumes each shard queue. A process subscribes to a shard only once it holds the row, and
-- gives the row up only after it has finished and acked everything it took from the shard, so the
-- next owner starts exactly where the previous one stopped (single-active-consumer alone would
-- hand the queue over at the moment of cancelling, with the previous owner's messages in flight).
-- A row whose owner's lease has expired may be taken over.
CREATE TABLE shard_owners (
    role        text NOT NULL,
    shard       integer NOT NULL,
    owner       text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, shard)
);
