//! Reproductions of real incidents in a throwaway network namespace. (stub)

#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {}

/// Placeholder until the scenarios land.
pub fn run(_args: ScenarioArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("scenarios are not built yet"))
}
