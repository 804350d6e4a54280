//! nftables: a plan's firewall actions applied as one `nft` transaction, the
//! handles of the rules it added read back from nft's echo, and exactly those
//! rules removed at stop.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use slipway_netmgr::plan::NFT_TABLE;

use crate::error::{Error, Result};

/// The chain whose jump rules every network shares: the plan flushes and
/// re-adds them at each start, so they are not any one network's to delete.
const SHARED_CHAIN: &str = "forward";

/// One rule a network added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHandle {
    /// `ip` or `ip6`.
    pub family: String,
    /// The chain in slipway's table.
    pub chain: String,
    /// nft's handle of the rule.
    pub handle: u64,
}

/// Runs `nft` with `args`, feeding `script` on stdin; returns stdout.
fn nft(args: &[&str], script: &str) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft (Debian package nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Nft(format!("cannot write to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("nft did not finish: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "nft {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `script` (nft command syntax, one command a line) atomically and
/// returns the handles of the rules it added outside the shared chain.
pub fn apply(script: &str) -> Result<Vec<RuleHandle>> {
    let echo = nft(&["-e", "-a", "-f", "-"], script)?;
    Ok(echo.lines().filter_map(echoed_rule).collect())
}

/// Parses one line of `nft -e -a` output: `add|insert rule FAMILY TABLE
/// CHAIN … # handle N`, for rules in slipway's table outside the shared chain.
fn echoed_rule(line: &str) -> Option<RuleHandle> {
    let mut words = line.split_whitespace();
    if !matches!(words.next()?, "add" | "insert") || words.next()? != "rule" {
        return None;
    }
    let family = words.next()?;
    if words.next()? != NFT_TABLE {
        return None;
    }
    let chain = words.next()?;
    let handle = line.rsplit_once("# handle ")?.1.trim().parse().ok()?;
    (chain != SHARED_CHAIN).then(|| RuleHandle {
        family: family.to_string(),
        chain: chain.to_string(),
        handle,
    })
}

/// The rules currently in slipway's table of `family` outside the shared
/// chain, as (chain, handle); `None` when the table does not exist.
fn table_rules(family: &str) -> Result<Option<Vec<(String, u64)>>> {
    let listing = match nft(&["-a", "list", "table", family, NFT_TABLE], "") {
        Ok(l) => l,
        // nft says "No such file or directory" for a missing table.
        Err(Error::Nft(msg)) if msg.contains("No such file or directory") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut rules = Vec::new();
    let mut chain: Option<String> = None;
    for line in listing.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("chain ") {
            chain = rest.split_whitespace().next().map(str::to_string);
            continue;
        }
        if t == "}" {
            chain = None;
            continue;
        }
        let Some(c) = &chain else { continue };
        if c == SHARED_CHAIN {
            continue;
        }
        if let Some((_, h)) = t.rsplit_once("# handle ") {
            if let Ok(h) = h.trim().parse() {
                rules.push((c.clone(), h));
            }
        }
    }
    Ok(Some(rules))
}

/// Removes exactly `rules`, in one transaction per family; a family's table
/// whose guest chains are left empty is deleted too (no network uses it).
/// Rules already gone (deleted by hand) are skipped.
pub fn remove(rules: &[RuleHandle]) -> Result<()> {
    let mut families: Vec<&str> = rules.iter().map(|r| r.family.as_str()).collect();
    families.dedup();
    let mut script = String::new();
    for family in families {
        let Some(present) = table_rules(family)? else {
            continue;
        };
        let mine: Vec<&RuleHandle> = rules
            .iter()
            .filter(|r| r.family == family && present.contains(&(r.chain.clone(), r.handle)))
            .collect();
        if mine.len() == present.len() {
            script.push_str(&format!("delete table {family} {NFT_TABLE}\n"));
        } else {
            for r in mine {
                script.push_str(&format!(
                    "delete rule {family} {NFT_TABLE} {} handle {}\n",
                    r.chain, r.handle
                ));
            }
        }
    }
    if !script.is_empty() {
        nft(&["-f", "-"], &script)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_lines_give_handles_outside_the_shared_chain() {
        let r = echoed_rule("insert rule ip slipway_network guest_output ip saddr 10.0.0.0/24 iifname \"br0\" counter packets 0 bytes 0 accept # handle 12").unwrap();
        assert_eq!(
            r,
            RuleHandle {
                family: "ip".into(),
                chain: "guest_output".into(),
                handle: 12
            }
        );
        assert_eq!(
            echoed_rule("add rule ip6 slipway_network forward counter jump guest_cross # handle 4"),
            None
        );
        assert_eq!(echoed_rule("add table ip slipway_network # handle 1"), None);
        assert_eq!(
            echoed_rule("add rule ip other guest_output accept # handle 3"),
            None
        );
        assert_eq!(echoed_rule("# new generation 2 by process 7 (nft)"), None);
    }
}
