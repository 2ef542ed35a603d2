-- What the upstream registry says of who owns its crates and who published
-- each version, for policies with owner rules, PostgreSQL flavour. Kept with where
-- it came from (`api`, or `dump`) and when (the API's answer, or the dump's
-- date), so a restart asks again only what has expired. Times are Unix
-- milliseconds.

-- A crate's current owners: a JSON array of `github:LOGIN` (users) and
-- `github:ORG:TEAM` (teams).
CREATE TABLE owner_facts (
    registry       TEXT COLLATE "C" NOT NULL,
    canonical_name TEXT COLLATE "C" NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    owners         TEXT COLLATE "C" NOT NULL,
    source         TEXT COLLATE "C" NOT NULL,
    fetched_at     BIGINT NOT NULL,
    PRIMARY KEY (registry, canonical_name)
);

-- Who published a version (`github:LOGIN`; NULL when the registry does not
-- say, as for versions older than 2019 on crates.io). Never changes.
CREATE TABLE publisher_facts (
    registry       TEXT COLLATE "C" NOT NULL,
    canonical_name TEXT COLLATE "C" NOT NULL,
    vers           TEXT COLLATE "C" NOT NULL,
    publisher      TEXT COLLATE "C",
    source         TEXT COLLATE "C" NOT NULL,
    fetched_at     BIGINT NOT NULL,
    PRIMARY KEY (registry, canonical_name, vers)
);

-- The approval queue shows who owns a held crate and who published its
-- newest held version, as the policy saw them when it held it.
ALTER TABLE approval_requests ADD COLUMN owners TEXT;
ALTER TABLE approval_requests ADD COLUMN publisher TEXT;

-- The dump fetched from owners_dump_url: its validators, so the next fetch
-- is conditional, and its date.
CREATE TABLE owner_dumps (
    registry      TEXT COLLATE "C" PRIMARY KEY,
    url           TEXT COLLATE "C" NOT NULL,
    etag          TEXT COLLATE "C",
    last_modified TEXT COLLATE "C",
    dump_date     BIGINT  NOT NULL,
    imported_at   BIGINT  NOT NULL
);
