//! Password checks with bounded memory and a bounded number in flight.
//!
//! An argon2id verification with wharf's parameters fills 19 MiB of memory on
//! purpose. Left to the allocator, a burst of parallel guesses allocated that
//! much per guess and the process kept most of it afterwards (a pool thread's
//! freed arena is not given back), so 200 concurrent wrong passwords took the
//! server from 47 MB to 1.5 GB. Here at most [`max_in_flight`] checks run at
//! once in the whole process, each in a memory block that is allocated once
//! and reused, so the memory of password checks never exceeds that many
//! blocks. A check that cannot start within [`QUEUE_WAIT`] is refused as
//! busy rather than queued without end.

use std::{
    sync::{LazyLock, Mutex},
    time::Duration,
};

use argon2::{Algorithm, Argon2, Block, Params, Version, password_hash::phc::PasswordHash};
use tokio::sync::Semaphore;

use crate::error::DbError;

/// How long a check may wait for one of the slots.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The largest argon2 memory a stored hash may ask for, in KiB (wharf's own
/// hashes use 19 MiB); a larger one is treated as damaged.
const MAX_MEMORY_KIB: u32 = 256 * 1024;

/// How many password checks run at once in this process: one per core, at
/// least two, at most four (more would only share the same cores).
pub fn max_in_flight() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .clamp(2, 4)
}

static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(max_in_flight()));

/// Memory blocks of finished checks, reused by the next ones.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Whether `password` matches the argon2 PHC string `stored`, checked in one
/// of the process's slots. `Err(DbError::Busy)` when no slot freed in time.
pub async fn verify(password: String, stored: String) -> Result<bool, DbError> {
    let permit = tokio::time::timeout(QUEUE_WAIT, SLOTS.acquire())
        .await
        .map_err(|_| {
            DbError::Busy("too many password checks are waiting; try again in a few seconds".into())
        })?
        .map_err(|_| DbError::Busy("password checks are shutting down".into()))?;
    let memory = MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    let (matches, memory) = tokio::task::spawn_blocking(move || {
        let mut memory = memory;
        let matches = verify_in(password.as_bytes(), &stored, &mut memory);
        (matches, memory)
    })
    .await
    .map_err(|e| DbError::Random(format!("the password check did not finish: {e}")))?;
    MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(memory);
    drop(permit);
    Ok(matches)
}

/// Verifies `password` against `stored` in `memory`, which is grown to the
/// hash's memory cost if it is smaller and kept at that size. Compares the
/// outputs in constant time (`phc::Output`'s equality).
fn verify_in(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    argon2::password_hash::phc::Output::new(&out).is_ok_and(|computed| &computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    #[test]
    fn verifies_what_argon2_hashed_and_refuses_the_rest() {
        let stored = Argon2::default()
            .hash_password(b"hunter2")
            .expect("hash")
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_in(b"hunter2", &stored, &mut memory));
        assert!(!verify_in(b"hunter3", &stored, &mut memory));
        assert!(!verify_in(b"hunter2", "not a hash", &mut memory));
        // The block was sized once and is reused.
        let len = memory.len();
        assert!(verify_in(b"hunter2", &stored, &mut memory));
        assert_eq!(memory.len(), len);
    }

    #[test]
    fn a_hash_asking_for_too_much_memory_is_refused_without_allocating() {
        let stored = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$W1ZsS3N3qfmcl4kQ2IB8xpvR3H3mRbVQxm0wfcD4f4A";
        let mut memory = Vec::new();
        assert!(!verify_in(b"anything", stored, &mut memory));
        assert!(memory.is_empty());
    }
}
