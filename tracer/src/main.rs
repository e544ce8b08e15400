use clap::Parser;
use tracer::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Trace(_) | Command::Demo(_) | Command::Scenario(_) => {
            anyhow::bail!("not implemented yet")
        }
    }
}
