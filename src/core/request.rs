//! The request: what a container's annotations ask for.
//!
//! Every front-end (hook, docker wrapper, NRI plugin) calls [`parse`], so the
//! vocabulary and its error messages are the same everywhere. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use tpm2_selftest::SelfTestLevel;

/// Every key this project reads starts with this prefix.
pub const PREFIX: &str = "oci-tpm-hook/";

pub const KEY_DEVICE: &str = "oci-tpm-hook/device";
pub const KEY_SELF_TEST: &str = "oci-tpm-hook/self-test";
pub const KEY_REQUIRED: &str = "oci-tpm-hook/required";

/// Kubernetes container-name annotations: containerd's CRI plugin, then CRI-O.
const CONTAINER_NAME_KEYS: [&str; 2] = [
    "io.kubernetes.cri.container-name",
    "io.kubernetes.container.name",
];
/// Kubernetes pod-namespace annotations: containerd's CRI plugin, then
/// CRI-O (which also sets its own key on a pod's infra container). Each
/// engine writes its own key after copying the pod author's annotations, so
/// a pod cannot change that one, but it can add the others: see
/// [`Requester::namespace_claims`].
pub const POD_NAMESPACE_KEYS: [&str; 3] = [
    "io.kubernetes.cri.sandbox-namespace",
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri-o.Namespace",
];
const POD_NAME_KEYS: [&str; 2] = ["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"];
/// Whether a container is a pod's infra container: containerd, then CRI-O.
const CONTAINER_TYPE_KEYS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// Which host TPM the container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The first TPM 2.0 resource-manager device the policy allows.
    Auto,
    /// A device by its name under /dev, e.g. `tpmrm0` (or `tpm0`, which policy
    /// refuses unless explicitly allowed).
    Named(String),
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

/// A container's TPM request, before policy and host validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmRequest {
    pub device: DeviceSelector,
    /// `None` = the policy's default level.
    pub self_test: Option<SelfTestLevel>,
    /// Fail the container when the TPM cannot be delivered (default: yes).
    pub required: bool,
}

/// Who is asking: the parts of the annotations that identify a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    pub container_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    /// Every namespace the container's annotations claim, as (key, value),
    /// empty values included. containerd writes only
    /// `io.kubernetes.cri.sandbox-namespace` and CRI-O only
    /// `io.kubernetes.pod.namespace`, each after the pod's own annotations,
    /// so the engine's key is always true and a pod can only add others:
    /// the policy admits a container only when every claim is allowed.
    pub namespace_claims: Vec<(String, String)>,
    /// A pod's infra ("pause") container: CRI-O copies the pod's
    /// annotations into its spec too, but it runs nothing that needs a TPM.
    pub is_sandbox: bool,
}

impl Requester {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| annotations.get(*k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Self {
            container_name: first(&CONTAINER_NAME_KEYS),
            pod_namespace: first(&POD_NAMESPACE_KEYS),
            pod_name: first(&POD_NAME_KEYS),
            namespace_claims: POD_NAMESPACE_KEYS
                .iter()
                .filter_map(|k| Some((k.to_string(), annotations.get(*k)?.clone())))
                .collect(),
            is_sandbox: CONTAINER_TYPE_KEYS
                .iter()
                .any(|k| annotations.get(*k).is_some_and(|v| v == "sandbox")),
        }
    }
}

/// A bad request. The message names the key, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub key: String,
    pub value: String,
    pub allowed: &'static str,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={:?} is not valid: allowed {}",
            crate::text::untrusted(&self.key),
            self.value,
            self.allowed
        )
    }
}

impl std::error::Error for RequestError {}

const ALLOWED_DEVICE: &str = "\"auto\", \"none\" or a TPM device name such as \"tpmrm0\"";
const ALLOWED_SELF_TEST: &str = "\"none\", \"quick\" or \"full\"";
const ALLOWED_REQUIRED: &str = "\"true\" or \"false\"";
const ALLOWED_KEYS: &str = "oci-tpm-hook/device, oci-tpm-hook/device.<container-name>, \
                            oci-tpm-hook/self-test, oci-tpm-hook/required";

/// Whether any annotation key starts with [`PREFIX`]: the fast path every
/// front-end takes for a container that asks for nothing (a sorted-map
/// lookup, no parsing).
pub fn mentions_us(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .range::<str, _>((Bound::Included(PREFIX), Bound::Unbounded))
        .next()
        .is_some_and(|(k, _)| k.starts_with(PREFIX))
}

/// Parses the request out of a container's annotations.
///
/// `container_name` is the Kubernetes container name when the front-end knows
/// it better than the annotations do (NRI); otherwise it is read from the
/// annotations. `Ok(None)` means the container asks for no TPM.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    container_name: Option<&str>,
) -> Result<Option<TpmRequest>, RequestError> {
    let mut device = None;
    let mut per_container = None;
    let mut self_test = None;
    let mut required = None;
    let name = container_name
        .map(str::to_owned)
        .or_else(|| Requester::from_annotations(annotations).container_name);

    for (key, value) in annotations.range::<str, _>((Bound::Included(PREFIX), Bound::Unbounded)) {
        let Some(minor) = key.strip_prefix(PREFIX) else {
            break; // BTreeMap order: past the prefix, no more of our keys
        };
        let value = value.trim();
        match minor {
            "device" => device = Some(parse_device(key, value)?),
            "self-test" => self_test = Some(parse_self_test(key, value)?),
            "required" => required = Some(parse_bool(key, value)?),
            _ => {
                match minor.strip_prefix("device.") {
                    Some(target) if is_container_name(target) => {
                        let selector = parse_device(key, value)?;
                        if name.as_deref() == Some(target) {
                            per_container = Some(selector);
                        }
                    }
                    Some(_) => return Err(RequestError {
                        key: key.clone(),
                        value: value.to_owned(),
                        allowed:
                            "a container name (lowercase letters, digits, '-') after \"device.\"",
                    }),
                    None => {
                        return Err(RequestError {
                            key: key.clone(),
                            value: value.to_owned(),
                            allowed: ALLOWED_KEYS,
                        })
                    }
                }
            }
        }
    }

    // The per-container form wins over the pod-wide one, so one container of a
    // pod can opt out with `device.<name>=none`.
    let chosen = per_container.or(device).flatten();
    Ok(chosen.map(|device| TpmRequest {
        device,
        self_test,
        required: required.unwrap_or(true),
    }))
}

/// `Ok(None)` is an explicit "none".
fn parse_device(key: &str, value: &str) -> Result<Option<DeviceSelector>, RequestError> {
    match value {
        "auto" => Ok(Some(DeviceSelector::Auto)),
        "none" => Ok(None),
        v if is_tpm_device_name(v) => Ok(Some(DeviceSelector::Named(v.to_owned()))),
        v => Err(RequestError {
            key: key.to_owned(),
            value: v.to_owned(),
            allowed: ALLOWED_DEVICE,
        }),
    }
}

fn parse_self_test(key: &str, value: &str) -> Result<SelfTestLevel, RequestError> {
    value.parse().map_err(|_| RequestError {
        key: key.to_owned(),
        value: value.to_owned(),
        allowed: ALLOWED_SELF_TEST,
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, RequestError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(RequestError {
            key: key.to_owned(),
            value: v.to_owned(),
            allowed: ALLOWED_REQUIRED,
        }),
    }
}

/// `tpmN` or `tpmrmN` with a decimal N: the only names the kernel gives TPM
/// character devices. Anything else (paths, `..`) never reaches the host code.
pub fn is_tpm_device_name(name: &str) -> bool {
    let digits = name
        .strip_prefix("tpmrm")
        .or_else(|| name.strip_prefix("tpm"));
    matches!(digits, Some(d) if !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A Kubernetes container name is a DNS-1123 label.
fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mentions() {
        assert!(!mentions_us(&ann(&[])));
        assert!(!mentions_us(&ann(&[
            ("oci-tpm-hook", "x"),
            ("io.x", "y"),
            ("oci-tpm-hooks/a", "b")
        ])));
        assert!(mentions_us(&ann(&[
            ("a", "b"),
            ("oci-tpm-hook/devcie", "x"),
            ("z", "y")
        ])));
    }

    #[test]
    fn no_annotations_no_request() {
        assert_eq!(parse(&ann(&[]), None), Ok(None));
        let other = ann(&[
            ("io.podman.annotations.init", "false"),
            ("oci-tpm-hook", "x"),
        ]);
        assert_eq!(parse(&other, None), Ok(None));
    }

    #[test]
    fn device_only_gets_defaults() {
        let req = parse(&ann(&[(KEY_DEVICE, "tpmrm0")]), None)
            .unwrap()
            .unwrap();
        assert_eq!(req.device, DeviceSelector::Named("tpmrm0".into()));
        assert_eq!(req.self_test, None);
        assert!(req.required);
    }

    #[test]
    fn all_keys() {
        let req = parse(
            &ann(&[
                (KEY_DEVICE, "auto"),
                (KEY_SELF_TEST, "full"),
                (KEY_REQUIRED, "false"),
            ]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(req.device, DeviceSelector::Auto);
        assert_eq!(req.self_test, Some(SelfTestLevel::Full));
        assert!(!req.required);
    }

    #[test]
    fn self_test_without_device_is_no_request() {
        assert_eq!(parse(&ann(&[(KEY_SELF_TEST, "quick")]), None), Ok(None));
    }

    #[test]
    fn bad_values_name_key_value_and_allowed() {
        for (k, v) in [
            (KEY_DEVICE, "/dev/tpmrm0"),
            (KEY_DEVICE, "tpmrm"),
            (KEY_DEVICE, "../../etc/passwd"),
            (KEY_DEVICE, "TPMRM0"),
            (KEY_SELF_TEST, "fast"),
            (KEY_REQUIRED, "yes"),
        ] {
            let err = parse(&ann(&[(KEY_DEVICE, "tpmrm0"), (k, v)]), None).unwrap_err();
            assert_eq!(err.key, k);
            assert_eq!(err.value, v);
            let msg = err.to_string();
            assert!(
                msg.contains(k) && msg.contains(v) && msg.contains("allowed"),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_key_under_prefix_is_an_error() {
        let err = parse(&ann(&[("oci-tpm-hook/devcie", "tpmrm0")]), None).unwrap_err();
        assert_eq!(err.key, "oci-tpm-hook/devcie");
        assert!(err
            .to_string()
            .contains("oci-tpm-hook/device.<container-name>"));
    }

    #[test]
    fn keys_and_values_are_shown_escaped() {
        let err = parse(
            &ann(&[("oci-tpm-hook/x\nlevel=error forged", "a\u{1b}[2J")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
        assert!(err.contains("x\\u{a}level"), "{err}");
    }

    #[test]
    fn per_container_form() {
        let a = ann(&[
            ("io.kubernetes.cri.container-name", "app"),
            ("oci-tpm-hook/device.app", "tpmrm1"),
            ("oci-tpm-hook/device.sidecar", "tpmrm0"),
        ]);
        let req = parse(&a, None).unwrap().unwrap();
        assert_eq!(req.device, DeviceSelector::Named("tpmrm1".into()));
        // The sidecar's form does not apply to a container with another name.
        assert_eq!(parse(&a, Some("other")), Ok(None));
        assert_eq!(
            parse(&a, Some("sidecar")).unwrap().unwrap().device,
            DeviceSelector::Named("tpmrm0".into())
        );
    }

    #[test]
    fn per_container_wins_and_can_opt_out() {
        let a = ann(&[
            ("io.kubernetes.container.name", "logger"),
            (KEY_DEVICE, "auto"),
            ("oci-tpm-hook/device.logger", "none"),
        ]);
        assert_eq!(parse(&a, None), Ok(None));
        assert!(parse(&a, Some("app")).unwrap().is_some());
    }

    #[test]
    fn per_container_values_are_checked_even_for_other_containers() {
        let a = ann(&[("oci-tpm-hook/device.sidecar", "bogus")]);
        assert!(parse(&a, Some("app")).is_err());
        let bad_name = ann(&[("oci-tpm-hook/device.Bad_Name", "tpmrm0")]);
        assert!(parse(&bad_name, None).is_err());
    }

    #[test]
    fn device_names() {
        for ok in ["tpm0", "tpmrm0", "tpmrm12"] {
            assert!(is_tpm_device_name(ok), "{ok}");
        }
        for bad in [
            "tpm",
            "tpmrm",
            "tpmrm-1",
            "tpm0/",
            "rm0",
            "tpmrm0a",
            "tpmrm123456",
            "",
        ] {
            assert!(!is_tpm_device_name(bad), "{bad}");
        }
    }

    #[test]
    fn whitespace_around_values_is_tolerated() {
        let req = parse(&ann(&[(KEY_DEVICE, " tpmrm0\n")]), None)
            .unwrap()
            .unwrap();
        assert_eq!(req.device, DeviceSelector::Named("tpmrm0".into()));
    }

    #[test]
    fn requester_reads_kubernetes_keys() {
        let r = Requester::from_annotations(&ann(&[
            ("io.kubernetes.pod.namespace", "attest"),
            ("io.kubernetes.pod.name", "p"),
            ("io.kubernetes.container.name", "c"),
        ]));
        assert_eq!(r.pod_namespace.as_deref(), Some("attest"));
        assert_eq!(r.pod_name.as_deref(), Some("p"));
        assert_eq!(r.container_name.as_deref(), Some("c"));
    }
}
