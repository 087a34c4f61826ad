//! `oci-tpm-runtime`: register it with docker as a runtime (see
//! packaging/docker/daemon.json); it grants annotated containers their TPM
//! and then becomes the real runtime.

fn main() -> std::process::ExitCode {
    let code = oci_tpm_hook::frontend::runtime_wrapper::run(std::env::args_os().skip(1).collect());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
