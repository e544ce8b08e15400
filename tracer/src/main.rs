use clap::Parser;
use tracer::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenario(args) => Ok(tracer::scenario::run(args)?),
        Command::Trace(_) | Command::Demo(_) => {
            anyhow::bail!("not implemented yet")
        }
    }
}
