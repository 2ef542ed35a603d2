-- Access control, SQLite flavour: clients of a registry with their own
-- credentials and grants, their downloads, the credentials generation that
-- tells servers to forget verified credentials, and the approval queue of
-- crate versions a policy holds. Times are Unix milliseconds.

-- A client has a token (its sha256 kept) or a password (its argon2 PHC string).
CREATE TABLE clients (
    id            INTEGER PRIMARY KEY,
    registry      TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    token_sha256  TEXT    UNIQUE,
    password_hash TEXT,
    grants        TEXT    NOT NULL, -- a JSON array of crate-name globs; [] is every crate
    publish       BOOLEAN NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    UNIQUE (registry, name)
);

CREATE TABLE client_downloads (
    registry TEXT    NOT NULL,
    client   TEXT    NOT NULL,
    crate    TEXT    NOT NULL,
    vers     TEXT    NOT NULL,
    day      TEXT    NOT NULL, -- YYYY-MM-DD, UTC
    count    INTEGER NOT NULL,
    PRIMARY KEY (registry, client, crate, vers, day)
);

-- Moved by every revoke, rotate and add, so that servers verify again.
CREATE TABLE auth_generations (
    registry   TEXT    PRIMARY KEY,
    generation INTEGER NOT NULL
);

-- One row per crate someone needed while versions of it were held.
CREATE TABLE approval_requests (
    registry           TEXT    NOT NULL,
    canonical_name     TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    newest_held        TEXT    NOT NULL,
    held_versions      INTEGER NOT NULL,
    requested_by       TEXT    NOT NULL,
    first_requested_at INTEGER NOT NULL,
    last_requested_at  INTEGER NOT NULL,
    requests           INTEGER NOT NULL,
    PRIMARY KEY (registry, canonical_name)
);

-- A decision on a whole crate (`vers` = '') or on one version.
CREATE TABLE approval_decisions (
    registry       TEXT    NOT NULL,
    canonical_name TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    vers           TEXT    NOT NULL,
    approved       BOOLEAN NOT NULL,
    decided_by     TEXT    NOT NULL,
    decided_at     INTEGER NOT NULL,
    note           TEXT,
    PRIMARY KEY (registry, canonical_name, vers)
);
