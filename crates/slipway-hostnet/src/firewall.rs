//! nftables: a plan's firewall steps rendered as one nft JSON document
//! (`nft -j -f -`, so names are JSON string values and never nft syntax),
//! applied as one transaction, the handles of the rules it added read back
//! from nft's JSON echo, and exactly those rules removed at stop.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slipway_netmgr::plan::{
    FirewallRule, FirewallStep, NftChain, NftFamily, RuleMatch, Subnet, Verdict, NFT_TABLE,
};

use crate::error::{Error, Result};

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

/// Runs `nft` with `args`, feeding `input` on stdin; returns stdout.
fn nft(args: &[&str], input: &[u8]) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft (Debian package nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
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

/// Runs the JSON `commands` as one nft transaction; returns nft's output.
fn run_json(extra: &[&str], commands: Vec<Value>) -> Result<String> {
    let doc = json!({ "nftables": commands });
    let mut args = vec!["-j"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", "-"]);
    nft(&args, doc.to_string().as_bytes())
}

/// The JSON of a table, chain or rule object's location.
fn table(family: NftFamily) -> Value {
    json!({ "family": family.as_str(), "name": NFT_TABLE })
}

fn chain(family: NftFamily, chain: NftChain) -> Value {
    json!({ "family": family.as_str(), "table": NFT_TABLE, "name": chain.as_str() })
}

/// nft's JSON for an address match's right-hand side.
fn subnet(net: &Subnet) -> Value {
    if net.is_host() {
        json!(net.address.to_string())
    } else {
        json!({ "prefix": { "addr": net.address.to_string(), "len": net.prefix } })
    }
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({ "match": { "op": op, "left": left, "right": right } })
}

fn port_range(ports: &Option<(u16, u16)>) -> Option<Value> {
    ports.map(|(a, b)| json!({ "range": [a, b] }))
}

/// The nft JSON expressions of a rule: its matches, a counter, the verdict.
fn rule_exprs(r: &FirewallRule) -> Vec<Value> {
    let mut e: Vec<Value> = r
        .matches
        .iter()
        .map(|m| match m {
            RuleMatch::InIface { name } => {
                matches("==", json!({ "meta": { "key": "iifname" } }), json!(name))
            }
            RuleMatch::OutIface { name } => {
                matches("==", json!({ "meta": { "key": "oifname" } }), json!(name))
            }
            RuleMatch::Source { net } | RuleMatch::Dest { net, .. } => {
                let protocol = if net.address.is_ipv4() { "ip" } else { "ip6" };
                let field = if matches!(m, RuleMatch::Source { .. }) {
                    "saddr"
                } else {
                    "daddr"
                };
                let op = if matches!(m, RuleMatch::Dest { negate: true, .. }) {
                    "!="
                } else {
                    "=="
                };
                matches(
                    op,
                    json!({ "payload": { "protocol": protocol, "field": field } }),
                    subnet(net),
                )
            }
            RuleMatch::Established => matches(
                "in",
                json!({ "ct": { "key": "state" } }),
                json!(["established", "related"]),
            ),
            RuleMatch::L4Proto { proto } => matches(
                "==",
                json!({ "meta": { "key": "l4proto" } }),
                json!(proto.as_str()),
            ),
        })
        .collect();
    e.push(json!({ "counter": null }));
    e.push(match &r.verdict {
        Verdict::Accept => json!({ "accept": null }),
        Verdict::Reject => json!({ "reject": null }),
        Verdict::Return => json!({ "return": null }),
        Verdict::Jump { chain } => json!({ "jump": { "target": chain.as_str() } }),
        Verdict::Masquerade { ports } => match port_range(ports) {
            Some(p) => json!({ "masquerade": { "port": p } }),
            None => json!({ "masquerade": null }),
        },
        Verdict::Snat { start, end, ports } => {
            let mut snat = serde_json::Map::new();
            let addr = if start == end {
                json!(start.to_string())
            } else {
                json!({ "range": [start.to_string(), end.to_string()] })
            };
            snat.insert("addr".into(), addr);
            if let Some(p) = port_range(ports) {
                snat.insert("port".into(), p);
            }
            json!({ "snat": snat })
        }
    });
    e
}

/// The nft JSON commands of one firewall step.
pub(crate) fn commands(step: &FirewallStep) -> Vec<Value> {
    match step {
        FirewallStep::Layout { family } => {
            let f = *family;
            let base = |c: NftChain, kind: &str, hook: &str, prio: i32| {
                let mut v = chain(f, c);
                let o = v.as_object_mut().expect("chain() is an object");
                o.insert("type".into(), json!(kind));
                o.insert("hook".into(), json!(hook));
                o.insert("prio".into(), json!(prio));
                o.insert("policy".into(), json!("accept"));
                v
            };
            vec![
                json!({ "add": { "table": table(f) } }),
                // Priority "filter" is 0, "srcnat" 100.
                json!({ "add": { "chain": base(NftChain::Forward, "filter", "forward", 0) } }),
                json!({ "add": { "chain": chain(f, NftChain::GuestOutput) } }),
                json!({ "add": { "chain": chain(f, NftChain::GuestInput) } }),
                json!({ "add": { "chain": chain(f, NftChain::GuestCross) } }),
                json!({ "add": { "chain": base(NftChain::GuestNat, "nat", "postrouting", 100) } }),
                json!({ "flush": { "chain": chain(f, NftChain::Forward) } }),
            ]
        }
        FirewallStep::Rule(r) => {
            let verb = if r.first { "insert" } else { "add" };
            vec![json!({ verb: { "rule": {
                "family": r.family.as_str(),
                "table": NFT_TABLE,
                "chain": r.chain.as_str(),
                "expr": rule_exprs(r),
            } } })]
        }
    }
}

/// The rules of a JSON echo or listing (`rule` objects, bare or inside
/// `add`/`insert`) in slipway's table outside the shared chain, as handles.
fn rules_in(output: &str) -> Result<Vec<RuleHandle>> {
    let mut out = Vec::new();
    for doc in serde_json::Deserializer::from_str(output).into_iter::<Value>() {
        let doc =
            doc.map_err(|e| Error::Nft(format!("nft printed JSON that does not parse: {e}")))?;
        let items = doc["nftables"].as_array().cloned().unwrap_or_default();
        for item in items {
            let rule = ["add", "insert"]
                .iter()
                .find_map(|verb| item.get(verb).and_then(|c| c.get("rule")))
                .or_else(|| item.get("rule"));
            let Some(rule) = rule else { continue };
            let (Some(family), Some(table), Some(chain), Some(handle)) = (
                rule["family"].as_str(),
                rule["table"].as_str(),
                rule["chain"].as_str(),
                rule["handle"].as_u64(),
            ) else {
                continue;
            };
            // The jumps in the shared chain are flushed and re-added at each
            // start: they are not any one network's to delete.
            if table == NFT_TABLE && chain != NftChain::Forward.as_str() {
                out.push(RuleHandle {
                    family: family.into(),
                    chain: chain.into(),
                    handle,
                });
            }
        }
    }
    Ok(out)
}

/// Applies `steps` atomically and returns the handles of the rules they
/// added outside the shared chain.
pub fn apply(steps: &[&FirewallStep]) -> Result<Vec<RuleHandle>> {
    let commands = steps.iter().flat_map(|s| commands(s)).collect();
    let echo = run_json(&["-e", "-a"], commands)?;
    rules_in(&echo)
}

/// The rules currently in slipway's table of `family` outside the shared
/// chain; `None` when the table does not exist.
fn table_rules(family: &str) -> Result<Option<Vec<RuleHandle>>> {
    match nft(&["-j", "-a", "list", "table", family, NFT_TABLE], b"") {
        Ok(listing) => rules_in(&listing).map(Some),
        // nft says "No such file or directory" for a missing table.
        Err(Error::Nft(msg)) if msg.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes exactly `rules`, in one transaction; a family's table whose
/// guest chains are left empty is deleted too (no network uses it). Rules
/// already gone (deleted by hand) are skipped.
pub fn remove(rules: &[RuleHandle]) -> Result<()> {
    let mut families: Vec<&str> = rules.iter().map(|r| r.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    let mut commands = Vec::new();
    for family in families {
        let Some(present) = table_rules(family)? else {
            continue;
        };
        let mine: Vec<&RuleHandle> = rules
            .iter()
            .filter(|r| r.family == family && present.contains(r))
            .collect();
        if mine.len() == present.len() {
            commands
                .push(json!({ "delete": { "table": { "family": family, "name": NFT_TABLE } } }));
        } else {
            commands.extend(mine.into_iter().map(|r| {
                json!({ "delete": { "rule": {
                    "family": r.family, "table": NFT_TABLE, "chain": r.chain, "handle": r.handle,
                } } })
            }));
        }
    }
    if !commands.is_empty() {
        run_json(&[], commands)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netxml::IfName;

    #[test]
    fn echo_gives_handles_outside_the_shared_chain() {
        let echo = r#"{"nftables": [{"add": {"table": {"family": "ip", "name": "slipway_network", "handle": 1}}},
            {"add": {"rule": {"family": "ip6", "table": "slipway_network", "chain": "forward", "expr": [], "handle": 4}}},
            {"insert": {"rule": {"family": "ip", "table": "slipway_network", "chain": "guest_output", "expr": [], "handle": 12}}},
            {"add": {"rule": {"family": "ip", "table": "other", "chain": "guest_output", "expr": [], "handle": 3}}}]}"#;
        assert_eq!(
            rules_in(echo).unwrap(),
            vec![RuleHandle {
                family: "ip".into(),
                chain: "guest_output".into(),
                handle: 12
            }]
        );
        assert!(rules_in("{\"nftables\": [").is_err());
    }

    /// A device name with nft syntax in it (valid for the kernel: no white
    /// space) stays one JSON string: the document has one command, and nft
    /// in a namespace of our own loads it as a literal name, adding no
    /// table, rule or verdict of its own.
    #[test]
    fn hostile_name_stays_a_value() {
        let name = IfName::new("b\";}#{accept").unwrap();
        let step = FirewallStep::Rule(FirewallRule {
            family: NftFamily::Ip,
            chain: NftChain::GuestOutput,
            first: false,
            matches: vec![RuleMatch::InIface { name: name.clone() }],
            verdict: Verdict::Reject,
        });
        let layout = FirewallStep::Layout {
            family: NftFamily::Ip,
        };
        let cmds = commands(&step);
        assert_eq!(cmds.len(), 1);
        let expr = &cmds[0]["add"]["rule"]["expr"];
        assert_eq!(expr[0]["match"]["right"], json!(name.as_str()));
        assert_eq!(expr[2], json!({ "reject": null }));
        let all = [commands(&layout), cmds].concat();
        let doc = json!({ "nftables": all }).to_string();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.json");
        std::fs::write(&file, doc).unwrap();
        let out = Command::new("unshare")
            .args([
                "-Urn",
                "sh",
                "-ec",
                "nft -j -f \"$1\"; nft -j list ruleset",
                "sh",
            ])
            .arg(&file)
            .output()
            .expect("unshare and nft (Debian packages util-linux, nftables)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
        let items = listing["nftables"].as_array().unwrap();
        let tables: Vec<&Value> = items.iter().filter_map(|i| i.get("table")).collect();
        assert_eq!(tables.len(), 1, "{listing}");
        let rules: Vec<&Value> = items.iter().filter_map(|i| i.get("rule")).collect();
        assert_eq!(rules.len(), 1, "{listing}");
        assert_eq!(rules[0]["expr"][0]["match"]["right"], json!(name.as_str()));
        assert_eq!(rules[0]["expr"].as_array().unwrap().len(), 3, "{listing}");
    }
}
