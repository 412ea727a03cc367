-- Contract v1.2: a gateway's own users (LiteLLM's user, team or end-user ids are strings,
-- not our UUIDs) linked to ours. An event names such a user in `gateway_user` (and carries
-- its alias as `user_id`); the worker books it for the user linked here, in the batch's
-- transaction, and dead-letters it as unknown_user when there is no link.
-- `usage-pipeline gateway-users link|unlink|list` keeps the table.
CREATE TABLE gateway_user_links (
    gateway     varchar(50)  NOT NULL CHECK (gateway ~ '^[a-z0-9_-]{1,50}$'),
    external_id varchar(255) NOT NULL CHECK (external_id <> ''),
    user_id     uuid         NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, external_id)
);
CREATE INDEX gateway_user_links_user_id_idx ON gateway_user_links (user_id);

GRANT SELECT ON gateway_user_links TO pipeline_writer, finance_reader;
