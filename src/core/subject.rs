//! The container a request comes from, as every front-end sees it, and how
//! messages and logs name it.

use std::collections::BTreeMap;

use crate::core::identity::Engine;
use crate::core::request::Requester;
use crate::text::untrusted;

/// A container as the front-ends see it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The runtime's container id.
    pub id: String,
    pub annotations: BTreeMap<String, String>,
    /// When the front-end knows the Kubernetes container name better than
    /// the annotations (NRI).
    pub container_name: Option<String>,
    /// When the front-end knows the pod namespace better than the annotations.
    pub pod_namespace: Option<String>,
}

impl Subject {
    pub fn requester(&self) -> Requester {
        let mut r = Requester::from_annotations(&self.annotations);
        if self.container_name.is_some() {
            r.container_name.clone_from(&self.container_name);
        }
        if let Some(ns) = &self.pod_namespace {
            // The runtime said so itself (NRI): that is the only claim.
            r.pod_namespace = Some(ns.clone());
            r.namespace_claims = vec![("the runtime's pod namespace".into(), ns.clone())];
        }
        r
    }

    /// "container 3f2a… (pod attest/licence, container app)": how every
    /// message names the container. Names come from whoever started the
    /// container, so they are shown escaped.
    pub fn describe(&self) -> String {
        let r = self.requester();
        // Engines show 64-hex-digit ids by their first 12 digits; other ids
        // (runc's, CRI's names) are shown whole.
        let short = if self.id.len() == 64 && self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            untrusted(&self.id[..12])
        } else {
            untrusted(&self.id)
        };
        let esc = |v: &Option<String>| v.as_deref().map(|s| untrusted(s).into_owned());
        let (ns, pod, c) = (
            esc(&r.pod_namespace),
            esc(&r.pod_name),
            esc(&r.container_name),
        );
        match (&ns, &pod, &c) {
            (Some(ns), Some(pod), Some(c)) => {
                format!("container {short} (pod {ns}/{pod}, container {c})")
            }
            (Some(ns), _, Some(c)) => format!("container {short} (namespace {ns}, container {c})"),
            (_, _, Some(c)) => format!("container {short} ({c})"),
            _ => format!("container {short}"),
        }
    }

    /// The container id, escaped for logs.
    pub fn id_for_log(&self) -> String {
        untrusted(&self.id).into_owned()
    }

    /// Who starts the container, as far as the fix for a refusal goes.
    pub fn engine(&self) -> Engine {
        let r = self.requester();
        if r.pod_namespace.is_some() || r.pod_name.is_some() {
            Engine::Kubernetes
        } else {
            Engine::Cli
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(id: &str, pairs: &[(&str, &str)]) -> Subject {
        Subject {
            id: id.into(),
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names_the_container_as_engines_do() {
        let long = "3f2a0c1d".repeat(8);
        assert_eq!(subject(&long, &[]).describe(), "container 3f2a0c1d3f2a");
        assert_eq!(subject("runc-id", &[]).describe(), "container runc-id");
        let pod = subject(
            "x",
            &[
                ("io.kubernetes.pod.namespace", "attest"),
                ("io.kubernetes.pod.name", "licence"),
                ("io.kubernetes.container.name", "app"),
            ],
        );
        assert_eq!(
            pod.describe(),
            "container x (pod attest/licence, container app)"
        );
        assert_eq!(pod.engine(), Engine::Kubernetes);
        assert_eq!(subject("x", &[]).engine(), Engine::Cli);
    }

    #[test]
    fn hostile_names_are_escaped() {
        let s = subject(
            "id\n2026 ERROR forged",
            &[("io.kubernetes.container.name", "a\u{1b}[2Jb")],
        );
        let shown = s.describe();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(!s.id_for_log().contains('\n'));
    }
}
