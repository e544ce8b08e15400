//! Everything that turns a [`crate::record::Record`] into output: a text line or a
//! JSON object.
//!
//! Both renderers read the same record through the same helpers (option naming in
//! `options`, errno names, Cilium mark decoding), so they cannot disagree on the data.

mod json;
mod options;
#[cfg(test)]
mod testing;
mod text;

pub use json::render_json;
pub use text::TextRenderer;
