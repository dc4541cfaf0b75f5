//! The generator's own resources: file descriptors and CPU time.
//!
//! Every client is a socket, and the default soft limit of 1024 descriptors
//! stops a 500-client run halfway, so the tool raises its soft limit to the
//! hard limit itself and refuses to start when even that is too low. CPU time
//! comes from `getrusage(RUSAGE_SELF)`, so the report can show whether the
//! generator, not the server, was the bottleneck.

use std::time::Duration;

use crate::error::LoadError;

/// Descriptors needed besides one per client (stdio, runtime, epoll, JSON file…).
const SPARE_FDS: u64 = 64;

/// Raises RLIMIT_NOFILE as far as allowed; fails if `clients` cannot fit.
pub fn raise_nofile(clients: u32) -> Result<u64, LoadError> {
    let needed = u64::from(clients) + SPARE_FDS;
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(LoadError::Runtime)?;
    if limit < needed {
        return Err(LoadError::FileLimit {
            clients,
            needed,
            limit,
        });
    }
    Ok(limit)
}

/// CPU time used by this process so far, and its peak resident set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub max_rss_bytes: u64,
}

impl Usage {
    pub fn now() -> Self {
        // SAFETY: getrusage only writes into the zeroed struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return Self::default();
        }
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        };
        Self {
            user: time(ru.ru_utime),
            system: time(ru.ru_stime),
            // Linux reports kilobytes.
            max_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
        }
    }

    /// CPU used between `start` and `self`.
    pub fn since(&self, start: &Usage) -> Usage {
        Usage {
            user: self.user.saturating_sub(start.user),
            system: self.system.saturating_sub(start.system),
            max_rss_bytes: self.max_rss_bytes,
        }
    }

    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let start = Usage::now();
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let used = Usage::now().since(&start);
        assert!(used.cpu() > Duration::ZERO, "{x}");
        assert!(used.max_rss_bytes > 0);
    }

    #[test]
    fn the_file_limit_covers_a_small_run() {
        assert!(raise_nofile(10).unwrap() >= 74);
        assert!(matches!(
            raise_nofile(u32::MAX),
            Err(LoadError::FileLimit { .. })
        ));
    }
}
