//! TPM 2.0 wire protocol and the self-test (placeholder until the module lands).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfTestLevel {
    None,
    #[default]
    Quick,
    Full,
}

impl std::str::FromStr for SelfTestLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "quick" => Ok(Self::Quick),
            "full" => Ok(Self::Full),
            other => Err(format!("{other:?} is not one of none, quick, full")),
        }
    }
}

impl std::fmt::Display for SelfTestLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Quick => "quick",
            Self::Full => "full",
        })
    }
}
