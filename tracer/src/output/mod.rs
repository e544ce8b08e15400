//! Text and JSON rendering of records, and folding of repeats. (stub)
