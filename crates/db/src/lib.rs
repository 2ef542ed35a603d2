#![doc = include_str!("../README.md")]

mod approvals;
mod changes;
mod clients;
mod crates;
mod db;
mod error;
mod leases;
mod login_failures;
mod owner_facts;
mod owners;
mod password;
mod sql;
mod stats;
mod tokens;
mod user;

pub use approvals::{ApprovalRequest, Approvals, Decision, DecisionInfo};
pub use changes::{Change, Changes};
pub use clients::{ClientCredential, ClientError, ClientInfo, Clients, DownloadCount, NewClient};
pub use crates::{
    Crates, IndexFile, MAX_PER_PAGE, NewVersion, PendingPublish, Published, SearchHit,
};
pub use db::{Backend, Db, day_name, utc_day};
pub use error::{DbError, ErrorKind, NotAnOwner, OwnersError, PublishError, TokenError, YankError};
pub use leases::{LeaseInfo, Leases};
pub use login_failures::{LoginFailures, MAX_FAILURES as MAX_LOGIN_FAILURES};
pub use owner_facts::{
    DumpCounts, DumpCrate, DumpState, FactSource, OwnerFacts, OwnersFact, PublisherFact,
};
pub use owners::{MAX_OWNERS_PER_CHANGE, Owners};
pub use password::max_in_flight as max_password_checks_in_flight;
pub use stats::{ClientId, CrateTotals, DayCounts, DayTotals, Stats, VersionCount};
pub use tokens::{NewToken, TOKEN_PREFIX, TokenId, TokenInfo, TokenSecret, Tokens};
pub use user::{MAX_USER_LEN, User, UserError};
