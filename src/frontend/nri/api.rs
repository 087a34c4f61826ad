//! The NRI messages this plugin exchanges, from the field numbers of NRI's
//! `api.proto` (package `nri.pkg.api.v1alpha1`, as spoken by containerd 1.7
//! and later; newer runtimes only add fields, which decoding skips).
//!
//! Decoding keeps only what the plugin looks at (ids, names, annotations,
//! hooks, devices); encoding writes only what it sends.

use std::collections::BTreeMap;

use super::proto::{map_entry, DecodeError, Reader, Writer};

pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

/// NRI's `Event` enum values.
pub const EVENT_CREATE_CONTAINER: u32 = 4;

/// The subscription bit for an event: event N is bit N-1.
pub const fn event_mask(event: u32) -> i32 {
    1 << (event - 1)
}

/// A message this module can encode and decode.
pub trait Message: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(buf: &[u8]) -> Result<Self, DecodeError>;
}

/// Loops over a message's fields, handing each to `f`.
fn fields<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, super::proto::Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        f(field, value)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Empty;

impl Message for Empty {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        fields(buf, |_, _| Ok(()))?;
        Ok(Self)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterPluginRequest {
    pub plugin_name: String,
    pub plugin_idx: String,
}

impl Message for RegisterPluginRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.plugin_name);
        w.string(2, &self.plugin_idx);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.plugin_name = v.as_string(f)?,
                2 => m.plugin_idx = v.as_string(f)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigureRequest {
    /// The plugin's drop-in configuration, if the runtime has one.
    pub config: String,
    pub runtime_name: String,
    pub runtime_version: String,
    /// Milliseconds.
    pub registration_timeout: i64,
    /// Milliseconds the runtime waits for each of our answers.
    pub request_timeout: i64,
    /// Sent by newer runtimes only.
    pub nri_version: String,
}

impl Message for ConfigureRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.config);
        w.string(2, &self.runtime_name);
        w.string(3, &self.runtime_version);
        w.int64(4, self.registration_timeout);
        w.int64(5, self.request_timeout);
        w.string(6, &self.nri_version);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.config = v.as_string(f)?,
                2 => m.runtime_name = v.as_string(f)?,
                3 => m.runtime_version = v.as_string(f)?,
                4 => m.registration_timeout = v.as_i64(f)?,
                5 => m.request_timeout = v.as_i64(f)?,
                6 => m.nri_version = v.as_string(f)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigureResponse {
    pub events: i32,
}

impl Message for ConfigureResponse {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.int32(2, self.events);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            if f == 2 {
                m.events = v.as_i32(f)?;
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynchronizeRequest {
    pub pods: Vec<PodSandbox>,
    pub containers: Vec<Container>,
    /// More pods and containers follow in another Synchronize call.
    pub more: bool,
}

impl Message for SynchronizeRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for p in &self.pods {
            w.message(1, &p.encode());
        }
        for c in &self.containers {
            w.message(2, &c.encode());
        }
        w.bool(3, self.more);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.pods.push(PodSandbox::decode(v.as_bytes(f)?)?),
                2 => m.containers.push(Container::decode(v.as_bytes(f)?)?),
                3 => m.more = v.as_bool(f)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// We never ask for container updates, so only `more` is carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynchronizeResponse {
    pub more: bool,
}

impl Message for SynchronizeResponse {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bool(2, self.more);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            if f == 2 {
                m.more = v.as_bool(f)?;
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateContainerRequest {
    pub pod: PodSandbox,
    pub container: Container,
}

impl Message for CreateContainerRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(1, &self.pod.encode());
        w.message(2, &self.container.encode());
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.pod = PodSandbox::decode(v.as_bytes(f)?)?,
                2 => m.container = Container::decode(v.as_bytes(f)?)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// Our answer: an adjustment of the container, never updates or evictions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateContainerResponse {
    /// `None` = leave the container as it is (an empty response).
    pub adjust: Option<ContainerAdjustment>,
}

impl Message for CreateContainerResponse {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        if let Some(a) = &self.adjust {
            w.message(1, &a.encode());
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            if f == 1 {
                m.adjust = Some(ContainerAdjustment::decode(v.as_bytes(f)?)?);
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandbox {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
}

impl Message for PodSandbox {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.id);
        w.string(2, &self.name);
        w.string(3, &self.uid);
        w.string(4, &self.namespace);
        w.string_map(6, &self.annotations);
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.id = v.as_string(f)?,
                2 => m.name = v.as_string(f)?,
                3 => m.uid = v.as_string(f)?,
                4 => m.namespace = v.as_string(f)?,
                6 => {
                    let (k, val) = map_entry(v.as_bytes(f)?)?;
                    m.annotations.insert(k, val);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub pod_sandbox_id: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub hooks: Hooks,
    pub linux: LinuxContainer,
}

impl Message for Container {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.id);
        w.string(2, &self.pod_sandbox_id);
        w.string(3, &self.name);
        w.string_map(6, &self.annotations);
        w.message(10, &self.hooks.encode());
        w.message(11, &self.linux.encode());
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.id = v.as_string(f)?,
                2 => m.pod_sandbox_id = v.as_string(f)?,
                3 => m.name = v.as_string(f)?,
                6 => {
                    let (k, val) = map_entry(v.as_bytes(f)?)?;
                    m.annotations.insert(k, val);
                }
                10 => m.hooks = Hooks::decode(v.as_bytes(f)?)?,
                11 => m.linux = LinuxContainer::decode(v.as_bytes(f)?)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// The container's Linux part: only its devices matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainer {
    pub devices: Vec<LinuxDevice>,
}

impl Message for LinuxContainer {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for d in &self.devices {
            w.message(2, &d.encode());
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            if f == 2 {
                m.devices.push(LinuxDevice::decode(v.as_bytes(f)?)?);
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// OCI hooks by stage, in NRI's field order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl Hooks {
    fn stages(&self) -> [&Vec<Hook>; 6] {
        [
            &self.prestart,
            &self.create_runtime,
            &self.create_container,
            &self.start_container,
            &self.poststart,
            &self.poststop,
        ]
    }
}

impl Message for Hooks {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for (i, stage) in self.stages().into_iter().enumerate() {
            for h in stage {
                w.message(i as u32 + 1, &h.encode());
            }
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            let stage = match f {
                1 => &mut m.prestart,
                2 => &mut m.create_runtime,
                3 => &mut m.create_container,
                4 => &mut m.start_container,
                5 => &mut m.poststart,
                6 => &mut m.poststop,
                _ => return Ok(()),
            };
            stage.push(Hook::decode(v.as_bytes(f)?)?);
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hook {
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Seconds; `None` = no timeout.
    pub timeout: Option<i64>,
}

impl Message for Hook {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.path);
        w.strings(2, &self.args);
        w.strings(3, &self.env);
        if let Some(t) = self.timeout {
            w.message(4, &optional_i64(t));
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.path = v.as_string(f)?,
                2 => m.args.push(v.as_string(f)?),
                3 => m.env.push(v.as_string(f)?),
                4 => m.timeout = Some(optional_value(v.as_bytes(f)?)? as i64),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxDevice {
    pub path: String,
    /// "c" or "b".
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Message for LinuxDevice {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.path);
        w.string(2, &self.kind);
        w.int64(3, self.major);
        w.int64(4, self.minor);
        for (field, value) in [(5, self.file_mode), (6, self.uid), (7, self.gid)] {
            if let Some(v) = value {
                w.message(field, &optional_u64(u64::from(v)));
            }
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                1 => m.path = v.as_string(f)?,
                2 => m.kind = v.as_string(f)?,
                3 => m.major = v.as_i64(f)?,
                4 => m.minor = v.as_i64(f)?,
                5 => m.file_mode = Some(optional_value(v.as_bytes(f)?)? as u32),
                6 => m.uid = Some(optional_value(v.as_bytes(f)?)? as u32),
                7 => m.gid = Some(optional_value(v.as_bytes(f)?)? as u32),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// What the plugin asks the runtime to change in a container being created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAdjustment {
    /// Annotations to add to the container's spec.
    pub annotations: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub hooks: Option<Hooks>,
    pub linux: Option<LinuxContainerAdjustment>,
}

impl Message for ContainerAdjustment {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string_map(2, &self.annotations);
        for (k, v) in &self.env {
            let mut kv = Writer::new();
            kv.string(1, k);
            kv.string(2, v);
            w.message(4, &kv.finish());
        }
        if let Some(h) = &self.hooks {
            w.message(5, &h.encode());
        }
        if let Some(l) = &self.linux {
            w.message(6, &l.encode());
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            match f {
                2 => {
                    let (k, val) = map_entry(v.as_bytes(f)?)?;
                    m.annotations.insert(k, val);
                }
                4 => m.env.push(map_entry(v.as_bytes(f)?)?),
                5 => m.hooks = Some(Hooks::decode(v.as_bytes(f)?)?),
                6 => m.linux = Some(LinuxContainerAdjustment::decode(v.as_bytes(f)?)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerAdjustment {
    pub devices: Vec<LinuxDevice>,
}

impl Message for LinuxContainerAdjustment {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for d in &self.devices {
            w.message(1, &d.encode());
        }
        w.finish()
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(buf, |f, v| {
            if f == 1 {
                m.devices.push(LinuxDevice::decode(v.as_bytes(f)?)?);
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// The `Optional*` wrappers are all `{ <scalar> value = 1; }`.
fn optional_u64(v: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint64(1, v);
    w.finish()
}

fn optional_i64(v: i64) -> Vec<u8> {
    let mut w = Writer::new();
    w.int64(1, v);
    w.finish()
}

fn optional_value(buf: &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0;
    fields(buf, |f, v| {
        if f == 1 {
            value = v.as_u64(f)?;
        }
        Ok(())
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let bytes = m.encode();
        assert_eq!(M::decode(&bytes).unwrap(), m, "bytes {bytes:02x?}");
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn device() -> LinuxDevice {
        LinuxDevice {
            path: "/dev/tpmrm0".into(),
            kind: "c".into(),
            major: 253,
            minor: 65536,
            file_mode: Some(0o660),
            uid: Some(0),
            gid: Some(102),
        }
    }

    fn container() -> Container {
        Container {
            id: "c1".into(),
            pod_sandbox_id: "p1".into(),
            name: "app".into(),
            annotations: annotations(&[("io.kubernetes.cri.container-name", "app")]),
            hooks: Hooks {
                create_runtime: vec![Hook {
                    path: "/usr/bin/oci-tpm-hook".into(),
                    args: vec!["oci-tpm-hook".into()],
                    env: vec![],
                    timeout: Some(10),
                }],
                poststop: vec![Hook {
                    path: "/bin/true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            linux: LinuxContainer {
                devices: vec![device()],
            },
        }
    }

    fn pod() -> PodSandbox {
        PodSandbox {
            id: "p1".into(),
            name: "licence".into(),
            uid: "u-1".into(),
            namespace: "attest".into(),
            annotations: annotations(&[("oci-tpm-hook/device", "auto"), ("x", "")]),
        }
    }

    #[test]
    fn event_mask_for_create_container_is_bit_3() {
        assert_eq!(event_mask(EVENT_CREATE_CONTAINER), 8);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Empty);
        round_trip(RegisterPluginRequest {
            plugin_name: "oci-tpm-hook".into(),
            plugin_idx: "10".into(),
        });
        round_trip(ConfigureRequest {
            config: "k = 1".into(),
            runtime_name: "containerd".into(),
            runtime_version: "1.7.24".into(),
            registration_timeout: 5000,
            request_timeout: 2000,
            nri_version: "v0.8.0".into(),
        });
        round_trip(ConfigureResponse {
            events: event_mask(EVENT_CREATE_CONTAINER),
        });
        round_trip(SynchronizeRequest {
            pods: vec![pod(), PodSandbox::default()],
            containers: vec![container()],
            more: true,
        });
        round_trip(SynchronizeResponse { more: true });
        round_trip(CreateContainerRequest {
            pod: pod(),
            container: container(),
        });
        round_trip(CreateContainerResponse { adjust: None });
        round_trip(CreateContainerResponse {
            adjust: Some(ContainerAdjustment {
                annotations: annotations(&[("oci-tpm-hook/device", "tpmrm0")]),
                env: vec![("TSS2_TCTI".into(), "device:/dev/tpmrm0".into())],
                hooks: Some(container().hooks),
                linux: Some(LinuxContainerAdjustment {
                    devices: vec![device()],
                }),
            }),
        });
        round_trip(device());
        round_trip(LinuxDevice {
            file_mode: None,
            uid: None,
            gid: None,
            ..device()
        });
    }

    #[test]
    fn uid_zero_is_present_not_unset() {
        let bytes = device().encode();
        // field 6 (uid), length-delimited, empty body: OptionalUInt32{value: 0}
        assert!(bytes.windows(2).any(|w| w == [0x32, 0x00]), "{bytes:02x?}");
    }

    #[test]
    fn configure_response_matches_go_encoding() {
        // events = 8 in field 2: key 0x10, varint 8.
        assert_eq!(ConfigureResponse { events: 8 }.encode(), [0x10, 0x08]);
    }
}
