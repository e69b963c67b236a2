//! Sharding the tenants folder across several `serve` processes (a StatefulSet's pods):
//! each runs only the tenants whose stable hash falls in its shard.
//!
//! Invariant: the rule is `u64::from_be_bytes(sha256(id)[..8]) % count == index`, the
//! same for every build and platform, so a tenant's shard (and where its journal must
//! live) changes only when the count does. The deployment guide relies on it.

use sha2::{Digest, Sha256};

/// The most shards; far past what one tenants folder needs.
pub const MOST_SHARDS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// The shard, of `count`, that tenant `id` belongs to.
pub fn shard_of(id: &str, count: u64) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % count.max(1)
}

impl Shard {
    /// `INDEX/COUNT`, where INDEX may be `hostname`: the number the host name ends in
    /// (a StatefulSet's pod `name-2` is shard 2).
    pub fn parse(text: &str, hostname: impl FnOnce() -> Option<String>) -> Result<Shard, String> {
        let usage = "give INDEX/COUNT, e.g. 0/3 or hostname/3";
        let (index, count) = text.split_once('/').ok_or(usage)?;
        let count: u64 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| (1..=MOST_SHARDS).contains(c))
            .ok_or_else(|| format!("COUNT must be a number from 1 to {MOST_SHARDS}; {usage}"))?;
        let index = match index.trim() {
            "hostname" => {
                let host = hostname().ok_or("this host's name cannot be read; give the index")?;
                let digits: String = host
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                digits.parse::<u64>().map_err(|_| {
                    "this host's name does not end in a number (as a StatefulSet pod's \
                     name-0, name-1 ... does); give the index"
                        .to_string()
                })?
            }
            number => number
                .parse()
                .map_err(|_| format!("INDEX must be a number or `hostname`; {usage}"))?,
        };
        if index >= count {
            return Err(format!(
                "the index is {index}, not below the count {count}: shards are 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn holds(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

/// This host's name, as `uname` gives it.
pub fn hostname() -> Option<String> {
    #[cfg(unix)]
    {
        let name = rustix::system::uname();
        name.nodename().to_str().ok().map(str::to_string)
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_the_first_eight_bytes_of_sha256_big_endian() {
        let digest = Sha256::digest(b"akerinord");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(shard_of("akerinord", 3), expected % 3);
        assert_eq!(shard_of("akerinord", 1), 0);
        // Computed apart from this code (Python: int.from_bytes(sha256(id)[:8], "big")
        // % 7), so the rule cannot change unnoticed.
        let shards: Vec<u64> = ["a", "b", "c", "akerinord"]
            .iter()
            .map(|id| shard_of(id, 7))
            .collect();
        assert_eq!(shards, FIXED);
    }

    const FIXED: [u64; 4] = [4, 0, 3, 3];

    #[test]
    fn every_tenant_is_in_exactly_one_shard() {
        for count in 1..=5 {
            for n in 0..200 {
                let id = format!("tenant-{n}");
                let holders = (0..count)
                    .filter(|&index| Shard { index, count }.holds(&id))
                    .count();
                assert_eq!(holders, 1, "{id} of {count}");
            }
        }
    }

    #[test]
    fn an_index_may_come_from_the_host_name() {
        let host = |name: &str| {
            let name = name.to_string();
            move || Some(name)
        };
        assert_eq!(
            Shard::parse("hostname/3", host("opter-visma-sync-2")),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            Shard::parse("1/3", || None),
            Ok(Shard { index: 1, count: 3 })
        );
        for (text, host) in [
            ("hostname/3", "opter-visma-sync-3"),
            ("hostname/3", "opter-visma-sync"),
            ("3/3", "x"),
            ("0/0", "x"),
            ("0", "x"),
            ("x/3", "x"),
            ("0/99999", "x"),
        ] {
            let e = Shard::parse(text, || Some(host.to_string()));
            assert!(e.is_err(), "{text} on {host}: {e:?}");
        }
    }
}
