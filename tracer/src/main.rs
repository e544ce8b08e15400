use clap::Parser;
use tracer::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Trace(args) => {
            let sel = tracer::kernel::loader::Selection {
                pids: args.pids,
                comms: args.comms,
                cgroup: args.cgroup,
                all: args.all,
            };
            let loaded = tracer::kernel::loader::load(&sel)?;
            eprintln!("tracing started: {} programs", loaded.attached);
            let mut reader = tracer::kernel::reader::Reader::new(loaded.events)?;
            let mut batch = Vec::new();
            loop {
                reader.next_batch(&mut batch).await?;
                for e in batch.drain(..) {
                    println!("{e:?}");
                }
            }
        }
        Command::Demo(_) | Command::Scenario(_) => anyhow::bail!("not implemented yet"),
    }
}
