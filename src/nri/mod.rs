//! containerd NRI plugin (placeholder until the plugin lands).

pub fn main(_args: Vec<std::ffi::OsString>) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the NRI plugin is not built yet")
}
