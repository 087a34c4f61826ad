//! protogen: writes the project's protobuf code from the upstream `.proto`
//! files inside the pinned source tarballs.
//!
//! ```text
//! protogen SET TARBALL OUT_DIR      (make proto; make proto-check)
//! ```
//!
//! SET is one of:
//!
//! - `nri`: the NRI and ttrpc message types (`src/frontend/nri/generated/`)
//!   from the CRI-O tarball's vendored containerd modules;
//! - `kubelet`: the kubelet's device plugin API, `v1beta1`, messages and
//!   gRPC services (tonic server traits and clients;
//!   `src/frontend/device_plugin/generated/`) from the Kubernetes tarball.
//!
//! The `.proto` files are read from the tarballs, never copied into the
//! repository; the generated code is checked in, so building the project
//! needs neither the tarballs nor this tool. `protox` compiles the files in
//! Rust (no system `protoc`), `prost-build` turns the descriptors into
//! code, and for services `tonic-prost-build`'s service generator adds the
//! gRPC code.
//!
//! ttrpc's `request.proto` imports `proto/status.proto`, a top-level
//! `Status` (a copy of `google.rpc.Status`) that the CRI-O tarball does not
//! carry: only its Go bindings are vendored. The compiler gets an empty
//! stand-in for that import, and the field is mapped to the hand-written
//! `ttrpc::Status` (field numbers from those Go bindings), so no code is
//! generated from the stand-in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

use anyhow::{bail, Context};
use prost_build::Module;
use protox::file::{ChainFileResolver, File, FileResolver, IncludeFileResolver};

/// One generated file.
struct Output {
    /// The `.proto` file, under the set's include root.
    proto: &'static str,
    /// Its protobuf package.
    package: &'static str,
    /// What the header says it is.
    what: &'static str,
    /// The file written in the output directory.
    file: &'static str,
}

/// A group of files generated from one tarball into one directory.
struct Set {
    name: &'static str,
    /// The pinned tarball's file name, as the header names it.
    tarball: &'static str,
    /// The include root inside the tarball: imports resolve against it.
    root: &'static str,
    outputs: &'static [Output],
    /// Generate gRPC services (server traits and clients) too.
    services: bool,
}

const SETS: [Set; 2] = [
    Set {
        name: "nri",
        tarball: "cri-o-v1.33.13.tar.xz",
        root: "cri-o-v1.33.13/vendor/github.com/containerd",
        outputs: &[
            Output {
                proto: "nri/pkg/api/api.proto",
                package: "nri.pkg.api.v1alpha1",
                what: "NRI v0.9.1",
                file: "nri_api.rs",
            },
            Output {
                proto: "ttrpc/request.proto",
                package: "ttrpc",
                what: "ttrpc v1.2.7",
                file: "ttrpc.rs",
            },
        ],
        services: false,
    },
    Set {
        name: "kubelet",
        tarball: "kubernetes-v1.34.9-ocp-4.21.tar.xz",
        root: "kubernetes/staging/src/k8s.io/kubelet/pkg/apis",
        outputs: &[Output {
            proto: "deviceplugin/v1beta1/api.proto",
            package: "v1beta1",
            what: "the kubelet's device plugin API v1beta1 (Kubernetes 1.34.9)",
            file: "deviceplugin_v1beta1.rs",
        }],
        services: true,
    },
];

/// The import of `request.proto` that the CRI-O tarball lacks (see the
/// module comment): a stand-in that only declares the message's name.
const STATUS_IMPORT: &str = "proto/status.proto";
const STATUS_STAND_IN: &str = "syntax = \"proto3\";\nmessage Status {}\n";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let names = || SETS.map(|s| s.name).join("|");
    let [set, tarball, out_dir] = args.as_slice() else {
        bail!("usage: protogen {} TARBALL OUT_DIR", names());
    };
    let Some(set) = SETS.iter().find(|s| s.name == set) else {
        bail!("unknown set {set:?}: one of {}", names());
    };
    let files = generate(set, Path::new(tarball))?;
    let out_dir = Path::new(out_dir);
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    for (name, text) in files {
        let path = out_dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("protogen: wrote {}", path.display());
    }
    Ok(())
}

/// The generated files of `set`: (file name, contents).
fn generate(set: &Set, tarball: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    extract(set, tarball, tmp.path())?;
    let include = tmp.path().join(set.root);

    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(include.clone()));
    resolver.add(StatusStandIn);
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    // Source info carries the .proto comments into the generated docs.
    compiler.include_source_info(true);
    // prost-build needs imported files too, to know their messages.
    compiler.include_imports(true);
    for out in set.outputs {
        compiler
            .open_file(include.join(out.proto))
            .with_context(|| format!("cannot compile {}", out.proto))?;
    }
    let requests = compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .map(|f| (Module::from_protobuf_package_name(f.package()), f))
        .collect();

    let mut config = prost_build::Config::new();
    config
        // Sorted maps: deterministic encoding and comparable values.
        .btree_map(["."])
        .extern_path(".Status", "super::Status");
    if set.services {
        // Clients and servers over any tower service: the front-end brings
        // its own unix-socket transport, so no `connect(url)` helpers.
        config.service_generator(
            tonic_prost_build::configure()
                .build_client(true)
                .build_server(true)
                .build_transport(false)
                .service_generator(),
        );
    }
    let mut modules: HashMap<Module, String> =
        config.generate(requests).context("prost-build failed")?;

    set.outputs
        .iter()
        .map(|out| {
            let module = Module::from_protobuf_package_name(out.package);
            let code = modules
                .remove(&module)
                .with_context(|| format!("no code generated for package {}", out.package))?;
            Ok((out.file, header(set, out) + &code))
        })
        .collect()
}

fn header(set: &Set, out: &Output) -> String {
    format!(
        "// Generated code: do not edit. {what}, package `{package}`,\n\
         // from {tarball}: {root}/{proto}\n\
         // by tools/protogen (protox, prost-build{tonic}); `make proto` regenerates\n\
         // it, `make proto-check` fails while it differs from what the tool writes.\n",
        what = match set.services {
            false => format!("Messages of {}", out.what),
            true => format!("Messages and gRPC services of {}", out.what),
        },
        package = out.package,
        tarball = set.tarball,
        root = set.root,
        proto = out.proto,
        tonic = if set.services {
            ", tonic-prost-build"
        } else {
            ""
        },
    )
}

/// Extracts the set's `.proto` files from the tarball into `dir` (with
/// `tar`, which reads `.xz` through xz-utils).
fn extract(set: &Set, tarball: &Path, dir: &Path) -> anyhow::Result<()> {
    if !tarball.is_file() {
        bail!("{} not found", tarball.display());
    }
    let members: Vec<PathBuf> = set
        .outputs
        .iter()
        .map(|o| Path::new(set.root).join(o.proto))
        .collect();
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(tarball)
        .arg("-C")
        .arg(dir)
        .args(&members)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!(
            "tar could not extract {} from {}: {status}",
            members
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            tarball.display()
        );
    }
    Ok(())
}

/// Serves [`STATUS_STAND_IN`] for [`STATUS_IMPORT`].
struct StatusStandIn;

impl FileResolver for StatusStandIn {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == STATUS_IMPORT {
            File::from_source(name, STATUS_STAND_IN)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}
