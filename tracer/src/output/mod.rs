//! Everything that turns a [`Record`] into output: a text line or a JSON object, and
//! the folding of repeats for text.
//!
//! Both renderers read the same record through the same helpers (option naming in
//! `options`, errno names, Cilium mark decoding), so they cannot disagree on the data.

mod fold;
mod json;
mod options;
mod ports;
mod reset_json;
mod reset_text;
mod samples;
mod stdout;
mod text;

use std::time::Duration;

pub use fold::Folder;
pub use json::render_json;
pub(crate) use json::{MarkView, SockoptsView};
pub use options::NamedOption;
pub use stdout::{OutputOptions, StdoutSink};
pub use text::TextRenderer;

use crate::record::Record;

/// The output format the daemon was asked for.
#[derive(Clone, Debug)]
pub enum Renderer {
    /// Lines for people; repeats folded within the window (see [`Renderer::folder`]).
    Text(TextRenderer),
    /// One JSON object per line for programs; every record, never folded.
    Json,
}

impl Renderer {
    /// Text in the local time zone.
    pub fn text(fold_window: Duration) -> Self {
        Self::Text(TextRenderer::local(fold_window))
    }

    pub fn render(&self, record: &Record) -> String {
        match self {
            Self::Text(text) => text.render(record),
            Self::Json => render_json(record),
        }
    }

    pub fn render_socket_drop(&self, drop: &crate::drops::SocketDrop) -> String {
        match self {
            Self::Text(text) => samples::drop_text(text, drop),
            Self::Json => samples::drop_json(drop),
        }
    }

    pub fn render_port_pressure(&self, pressure: &crate::ports::PortPressure) -> String {
        match self {
            Self::Text(text) => ports::text(text, pressure),
            Self::Json => ports::json(pressure),
        }
    }

    pub fn render_listen_overflow(&self, overflow: &crate::listen::ListenOverflow) -> String {
        match self {
            Self::Text(text) => samples::overflow_text(text, overflow),
            Self::Json => samples::overflow_json(overflow),
        }
    }

    /// The folder records go through before [`Renderer::render`]: JSON consumers get
    /// every record as it happens, so for JSON it folds nothing.
    pub fn folder(&self) -> Folder {
        match self {
            Self::Text(text) => Folder::new(text.fold_window()),
            Self::Json => Folder::new(Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::testing::cilium_incident;

    #[test]
    fn text_and_json_render_the_same_record() {
        let record = cilium_incident();
        let text =
            Renderer::Text(TextRenderer::new(TimeZone::UTC, Duration::from_millis(500))).render(&record);
        let json: serde_json::Value = serde_json::from_str(&Renderer::Json.render(&record)).unwrap();
        assert!(text.starts_with("12:53:25.866 EADDRNOTAVAIL connect envoy[401] fd=131"), "{text}");
        assert_eq!(json["error"], "EADDRNOTAVAIL");
        assert_eq!(json["sockopts"]["SO_MARK"], "0x32030b00");
        assert!(text.contains("SO_MARK=0x32030b00(cilium id=12803)"));
    }

    #[test]
    fn json_is_never_folded() {
        let window = Duration::from_millis(500);
        let start = Instant::now();
        let mut json_folder = Renderer::Json.folder();
        assert_eq!(json_folder.push(cilium_incident(), start).len(), 1);
        assert_eq!(json_folder.push(cilium_incident(), start).len(), 1);
        let mut text_folder = Renderer::text(window).folder();
        assert!(text_folder.push(cilium_incident(), start).is_empty());
    }
}
