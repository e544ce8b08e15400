//! Reproductions of real incidents in a throwaway network namespace. (stub)

#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {}
