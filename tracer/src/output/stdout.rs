//! Records to stdout: filtered by errno, folded (text only), rendered, one per line.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use crate::{
    cli::OutputFormat,
    drops::SocketDrop,
    listen::ListenOverflow,
    output::{Folder, Renderer},
    record::Record,
    sink::{Sink, Totals},
};

/// How records are printed.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub format: OutputFormat,
    pub fold: Duration,
    /// Print only failures with one of these errnos (empty: everything).
    pub errnos: Vec<i32>,
    /// Text prints failures only unless this is set; JSON prints every record.
    pub text_successes: bool,
}

pub struct StdoutSink {
    renderer: Renderer,
    folder: Folder,
    errnos: Vec<i32>,
    failures_only: bool,
    out: io::BufWriter<io::Stdout>,
}

impl StdoutSink {
    pub fn new(options: &OutputOptions) -> Self {
        let renderer = match options.format {
            OutputFormat::Json => Renderer::Json,
            OutputFormat::Text => Renderer::text(options.fold),
        };
        let folder = renderer.folder();
        // A person reads text: one line per failure. Programs get every event as JSON.
        let failures_only = options.format == OutputFormat::Text && !options.text_successes;
        Self {
            renderer,
            folder,
            errnos: options.errnos.clone(),
            failures_only,
            out: io::BufWriter::new(io::stdout()),
        }
    }

    fn wanted(&self, record: &Record) -> bool {
        if !self.errnos.is_empty() {
            return record.errno.is_some_and(|e| self.errnos.contains(&e));
        }
        !self.failures_only || record.errno.is_some() || record.event.is_failure()
    }

    fn write_all(&mut self, records: &[Record]) -> io::Result<()> {
        for record in records {
            writeln!(self.out, "{}", self.renderer.render(record))?;
        }
        Ok(())
    }
}

impl Sink for StdoutSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        if !self.wanted(record) {
            return Ok(());
        }
        let ready = self.folder.push(record.clone(), Instant::now());
        self.write_all(&ready)
    }

    /// Ends a batch: what was written reaches the reader now, not when the buffer fills.
    fn progress(&mut self, _totals: &Totals) -> io::Result<()> {
        self.out.flush()
    }

    fn listen_overflow(&mut self, overflow: &ListenOverflow) -> io::Result<()> {
        writeln!(self.out, "{}", self.renderer.render_listen_overflow(overflow))
    }

    fn port_round(&mut self, round: &crate::ports::Round) -> io::Result<()> {
        for pressure in &round.pressures {
            writeln!(self.out, "{}", self.renderer.render_port_pressure(pressure))?;
        }
        Ok(())
    }

    fn socket_drop(&mut self, drop: &SocketDrop) -> io::Result<()> {
        writeln!(self.out, "{}", self.renderer.render_socket_drop(drop))
    }

    fn deadline(&self) -> Option<Instant> {
        self.folder.next_deadline()
    }

    fn flush_due(&mut self, now: Instant) -> io::Result<()> {
        let due = self.folder.flush_due(now);
        self.write_all(&due)?;
        self.out.flush()
    }

    fn finish(&mut self, _totals: &Totals) -> io::Result<()> {
        let rest = self.folder.flush_all();
        self.write_all(&rest)?;
        self.out.flush()
    }
}
