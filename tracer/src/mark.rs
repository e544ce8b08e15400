//! Cilium SO_MARK decoding. (stub)
