-- Traffic statistics, PostgreSQL flavour. Days are `YYYY-MM-DD`, UTC. Written in
-- batches by the server (an in-memory accumulator flushed every few seconds),
-- deleted after `[stats] retention`.

-- Downloads of each crate version per day, and the bytes they took.
CREATE TABLE stats_downloads (
    registry  TEXT COLLATE "C" NOT NULL,
    day       TEXT COLLATE "C" NOT NULL,
    crate     TEXT COLLATE "C" NOT NULL,
    vers      TEXT COLLATE "C" NOT NULL,
    downloads BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    PRIMARY KEY (registry, day, crate, vers)
);

-- Every request of a registry per day (index files, crate files, API), and
-- the bytes of the responses.
CREATE TABLE stats_days (
    registry TEXT COLLATE "C" NOT NULL,
    day      TEXT COLLATE "C" NOT NULL,
    requests BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    PRIMARY KEY (registry, day)
);

-- The distinct clients that downloaded per day: `client:NAME` where
-- credentials are required, else `addr:` and the hex HMAC-SHA256 of the
-- address under that day's key. No address is stored.
CREATE TABLE stats_clients (
    registry TEXT COLLATE "C" NOT NULL,
    day      TEXT COLLATE "C" NOT NULL,
    client   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (registry, day, client)
);

-- The random key of each day's address hashes, shared by the instances that
-- share this database; deleted when the day is over, after which nobody can
-- tell which address a hash was.
CREATE TABLE stats_keys (
    day TEXT COLLATE "C" PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL
);
