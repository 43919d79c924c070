-- hyrec feedback store on PostgreSQL, version 1: what the SQLite store holds (events with their
-- idempotency keys, impressions, catalogue upserts), plus what replicas share: the interest-profile
-- cache entries, the record of forgotten users, and one change counter over catalogue upserts and
-- deletions (replicas apply the changes after the last version they saw).

CREATE SEQUENCE hyrec_changes;  -- one counter for items.version and deletions.version

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    item_id text NOT NULL,
    event text NOT NULL,
    value double precision,
    timestamp double precision NOT NULL,  -- seconds since the epoch, as in the SQLite store
    client_id text  -- the client's idempotency key (event_id in the API)
);
CREATE INDEX events_user ON events (user_id, id);
CREATE INDEX events_user_item ON events (user_id, item_id, timestamp);
CREATE UNIQUE INDEX events_client_id ON events (client_id) WHERE client_id IS NOT NULL;

CREATE TABLE impressions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    item_id text NOT NULL,
    request_id text NOT NULL,
    timestamp double precision NOT NULL
);
CREATE INDEX impressions_user_item ON impressions (user_id, item_id, timestamp);

CREATE TABLE items (
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- first-stored order (the replay order)
    item_id text PRIMARY KEY,
    body text NOT NULL,  -- the item as JSON (id, title, description, attributes)
    updated double precision NOT NULL,
    version bigint NOT NULL  -- from hyrec_changes, bumped by every upsert of the row
);
CREATE INDEX items_version ON items (version);

CREATE TABLE profiles (
    pseudonym text NOT NULL,  -- the profile cache's salted HMAC of the user, never a raw id
    variant text NOT NULL,
    key text NOT NULL,  -- the full cache key as JSON: a lookup with another key misses
    body text NOT NULL,  -- the InterestProfile as JSON
    updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pseudonym, variant)
);

CREATE TABLE deletions (
    user_key text PRIMARY KEY,  -- the model's salted HMAC pseudonym of the forgotten user
    profile_key text,  -- the profile cache's pseudonym (its entries were deleted with the user)
    snapshot_row integer,  -- the user's row in the model snapshot, blanked on every replica
    version bigint NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deletions_version ON deletions (version);
CREATE INDEX deletions_profile_key ON deletions (profile_key);
