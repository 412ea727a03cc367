-- Where each consumer group has booked up to, per topic partition, written in the same
-- transaction as the books. Kafka's committed offsets stay advisory: a batch that starts
-- past `next_offset` reveals records the consumer skipped, and the worker rewinds.
CREATE TABLE consumer_offsets (
    consumer_group VARCHAR(255) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    partition INTEGER NOT NULL CHECK (partition >= 0),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    -- Set when the worker rewound the group to `next_offset`; if the broker still starts
    -- past it, the offsets between hold no records (transaction markers) and are skipped.
    rewound_to BIGINT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

GRANT SELECT, INSERT, UPDATE ON consumer_offsets TO pipeline_writer;
