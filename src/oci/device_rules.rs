//! A spec's device-cgroup rules (`linux.resources.devices`): does the spec
//! already let the container read and write a char device? The entries are
//! read into `devcgroup`'s one rule type and judged by its evaluator.
//!
//! One evaluator for every front-end: the hook skips its own cgroup rule when
//! the spec allows the device, the docker wrapper skips adding one. Rules
//! apply in order, the last match wins, and the runtime starts from "deny
//! all". Pure.

use anyhow::{anyhow, bail, Context};
use devcgroup::rule::{parse_access, spec_allows_rw, DevType, DeviceRule, RWM};
use devcgroup::DeviceAccess;
use serde_json::Value;

/// Whether `rules` let the container read and write `c major:minor`. A rule
/// that is not a well-formed entry is an error naming its index.
pub fn allows_char_device(rules: &[Value], major: u32, minor: u32) -> anyhow::Result<bool> {
    let parsed = rules
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_rule(entry).with_context(|| {
                format!("/linux/resources/devices/{i} ({entry}) is not a valid rule")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(spec_allows_rw(&parsed, &DeviceAccess::new(major, minor)))
}

/// One `linux.resources.devices` entry as a [`DeviceRule`].
fn parse_rule(v: &Value) -> anyhow::Result<DeviceRule> {
    if !v.is_object() {
        bail!("not an object");
    }
    let allow = v
        .get("allow")
        .and_then(Value::as_bool)
        .ok_or_else(|| anyhow!("\"allow\" must be true or false"))?;
    let dev_type = match v.get("type") {
        None | Some(Value::Null) => DevType::Any,
        Some(Value::String(t)) => DevType::parse(t)?,
        Some(_) => bail!("\"type\" must be a string"),
    };
    // Negative numbers mean "any" in some runtimes' specs (-1 = wildcard);
    // a number no device can have matches none.
    let num = |k: &str| -> anyhow::Result<Option<u32>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => {
                let n = n
                    .as_i64()
                    .ok_or_else(|| anyhow!("{k:?} must be a number"))?;
                if n < 0 {
                    Ok(None)
                } else {
                    u32::try_from(n)
                        .map(Some)
                        .map_err(|_| anyhow!("{k:?} = {n} is not a device number"))
                }
            }
        }
    };
    let access = match v.get("access") {
        None | Some(Value::Null) => RWM,
        Some(Value::String(s)) => parse_access(s)?,
        Some(_) => bail!("\"access\" must be a string"),
    };
    Ok(DeviceRule {
        allow,
        dev_type,
        major: num("major")?,
        minor: num("minor")?,
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn last_match_wins() {
        let (maj, min) = (253, 65536);
        assert!(!allows_char_device(&[], maj, min).unwrap());
        assert!(allows_char_device(
            &rules(json!([{"allow": false, "access": "rwm"},
                          {"allow": true, "type": "c", "major": maj, "minor": min, "access": "rwm"}])),
            maj,
            min
        )
        .unwrap());
        // Allowed, then denied again by a later wildcard rule.
        assert!(!allows_char_device(
            &rules(
                json!([{"allow": true, "type": "c", "major": maj, "minor": min, "access": "rw"},
                          {"allow": false, "type": "c", "major": -1, "access": "w"}])
            ),
            maj,
            min
        )
        .unwrap());
        // A wildcard allow-all (privileged) counts.
        assert!(
            allows_char_device(&rules(json!([{"allow": true, "access": "rwm"}])), maj, min)
                .unwrap()
        );
        // Read only is not enough; another device or a block device does not count.
        assert!(!allows_char_device(
            &rules(
                json!([{"allow": true, "type": "c", "major": maj, "minor": min, "access": "r"},
                          {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                          {"allow": true, "type": "b", "major": maj, "minor": min, "access": "rw"}])
            ),
            maj,
            min
        )
        .unwrap());
    }

    #[test]
    fn bad_rules_name_their_index() {
        for (bad, index) in [
            (json!([1]), "/0"),
            (json!([{"allow": true}, "x"]), "/1"),
            (json!([{"access": "rw"}]), "/0"),
            (json!([{"allow": true, "type": "x"}]), "/0"),
            (json!([{"allow": true, "major": "1"}]), "/0"),
            (json!([{"allow": true, "access": 7}]), "/0"),
        ] {
            let err = format!(
                "{:#}",
                allows_char_device(&rules(bad.clone()), 1, 3).unwrap_err()
            );
            assert!(
                err.contains(&format!("/linux/resources/devices{index}")),
                "{bad}: {err}"
            );
        }
    }
}
