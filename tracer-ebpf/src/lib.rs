#![no_std]

// Gives the crate a library target so `tracer` can name it as a build dependency.
