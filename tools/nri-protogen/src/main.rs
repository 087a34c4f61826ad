//! nri-protogen: writes the Rust types of the NRI and ttrpc messages from
//! the upstream `.proto` files inside the pinned CRI-O source tarball.
//!
//! ```text
//! nri-protogen TARBALL OUT_DIR      (make proto; make proto-check)
//! ```
//!
//! The `.proto` files are read from the tarball, never copied into the
//! repository; the generated code is checked in, so building the project
//! needs neither the tarball nor this tool. `protox` compiles the files in
//! Rust (no system `protoc`) and `prost-build` turns the descriptors into
//! code.
//!
//! ttrpc's `request.proto` imports `proto/status.proto`, a top-level
//! `Status` (a copy of `google.rpc.Status`) that the tarball does not carry:
//! only its Go bindings are vendored. The compiler gets an empty stand-in
//! for that import, and the field is mapped to the hand-written
//! `ttrpc::Status` (field numbers from those Go bindings), so no code is
//! generated from the stand-in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

use anyhow::{bail, Context};
use prost_build::Module;
use protox::file::{ChainFileResolver, File, FileResolver, IncludeFileResolver};

/// The pinned tarball's file name, as the header names it.
const TARBALL: &str = "cri-o-v1.33.13.tar.xz";
/// Where the vendored containerd modules live inside it.
const VENDOR: &str = "cri-o-v1.33.13/vendor/github.com/containerd";

/// One generated file.
struct Output {
    /// The `.proto` file, under [`VENDOR`].
    proto: &'static str,
    /// Its protobuf package.
    package: &'static str,
    /// What the header says it is.
    what: &'static str,
    /// The file written in the output directory.
    file: &'static str,
}

const OUTPUTS: [Output; 2] = [
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
];

/// The import of `request.proto` that the tarball lacks (see the module
/// comment): a stand-in that only declares the message's name.
const STATUS_IMPORT: &str = "proto/status.proto";
const STATUS_STAND_IN: &str = "syntax = \"proto3\";\nmessage Status {}\n";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let [tarball, out_dir] = args.as_slice() else {
        bail!("usage: nri-protogen TARBALL OUT_DIR (TARBALL is {TARBALL})");
    };
    let files = generate(Path::new(tarball))?;
    let out_dir = Path::new(out_dir);
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    for (name, text) in files {
        let path = out_dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("nri-protogen: wrote {}", path.display());
    }
    Ok(())
}

/// The generated files: (file name, contents).
fn generate(tarball: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    extract(tarball, tmp.path())?;
    let include = tmp.path().join(VENDOR);

    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(include.clone()));
    resolver.add(StatusStandIn);
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    // Source info carries the .proto comments into the generated docs.
    compiler.include_source_info(true);
    // prost-build needs the imported stand-in too, to know the message.
    compiler.include_imports(true);
    for out in &OUTPUTS {
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
    let mut modules: HashMap<Module, String> =
        config.generate(requests).context("prost-build failed")?;

    OUTPUTS
        .iter()
        .map(|out| {
            let module = Module::from_protobuf_package_name(out.package);
            let code = modules
                .remove(&module)
                .with_context(|| format!("no code generated for package {}", out.package))?;
            Ok((out.file, header(out) + &code))
        })
        .collect()
}

fn header(out: &Output) -> String {
    format!(
        "// Generated code: do not edit. Messages of {what}, package `{package}`,\n\
         // from {TARBALL}: {VENDOR}/{proto}\n\
         // by tools/nri-protogen (protox and prost-build); `make proto` regenerates\n\
         // it, `make proto-check` fails while it differs from what the tool writes.\n",
        what = out.what,
        package = out.package,
        proto = out.proto,
    )
}

/// Extracts the `.proto` files from the tarball into `dir` (with `tar`,
/// which reads `.xz` through xz-utils).
fn extract(tarball: &Path, dir: &Path) -> anyhow::Result<()> {
    if !tarball.is_file() {
        bail!("{} not found", tarball.display());
    }
    let members: Vec<PathBuf> = OUTPUTS
        .iter()
        .map(|o| Path::new(VENDOR).join(o.proto))
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
