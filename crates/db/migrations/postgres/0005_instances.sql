-- Several wharf instances on one database. Times are Unix milliseconds.

-- The lease of a mirror's passes: one instance (holder) runs passes while
-- its lease has not expired, renewing it as it goes; another takes it over
-- once it has. last_full_pass says when a full pass last ended, so an
-- instance that takes over does not repeat one that was just done.
CREATE TABLE mirror_leases (
    registry       TEXT NOT NULL PRIMARY KEY,
    holder         TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    last_full_pass BIGINT
);

-- Failed logins per (address, user name) and per address for unknown
-- tokens, counted across instances: a window's count, and the lockout it
-- led to.
CREATE TABLE login_failures (
    registry     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    failures     BIGINT NOT NULL,
    locked_until BIGINT,
    PRIMARY KEY (registry, subject)
);
