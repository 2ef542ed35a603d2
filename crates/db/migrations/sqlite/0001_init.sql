-- wharf-db schema, SQLite flavour. The PostgreSQL file beside this one has the same
-- tables, columns and constraints; only the column types are spelled differently.
-- Times are Unix milliseconds.

-- One row per crate of a hosted registry. `name` is the spelling of the first
-- publish; `canonical_name` (lowercase, `-` as `_`) makes spellings one crate.
CREATE TABLE crates (
    id                INTEGER PRIMARY KEY,
    registry          TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    canonical_name    TEXT    NOT NULL,
    -- Bumped by every change of the crate's index file: the ETag of that file.
    index_revision    INTEGER NOT NULL,
    -- The newest version that is not yanked, by semver; NULL when all are.
    max_version       TEXT,
    -- Of the highest version published; `description_lower` is what search reads.
    description       TEXT,
    description_lower TEXT    NOT NULL,
    keywords          TEXT    NOT NULL, -- a JSON array of strings
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (registry, canonical_name)
);

-- One row per published version, in publish order (`id`).
CREATE TABLE versions (
    id            INTEGER PRIMARY KEY,
    crate_id      INTEGER NOT NULL REFERENCES crates (id),
    vers          TEXT    NOT NULL,
    -- `vers` without build metadata: `1.0.0+a` and `1.0.0` are one version.
    vers_no_build TEXT    NOT NULL,
    cksum         TEXT    NOT NULL,
    yanked        BOOLEAN NOT NULL,
    -- The index line, byte for byte; only its `"yanked"` value ever changes.
    index_line    TEXT    NOT NULL,
    description   TEXT,
    keywords      TEXT    NOT NULL, -- a JSON array of strings
    size_bytes    INTEGER NOT NULL,
    published_by  TEXT    NOT NULL,
    published_at  INTEGER NOT NULL,
    UNIQUE (crate_id, vers_no_build)
);

CREATE TABLE crate_owners (
    crate_id INTEGER NOT NULL REFERENCES crates (id),
    login    TEXT    NOT NULL,
    added_by TEXT    NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (crate_id, login)
);

-- API tokens. Only the sha256 of a secret is kept.
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    registry      TEXT    NOT NULL,
    login         TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE INDEX tokens_by_registry ON tokens (registry, id);
