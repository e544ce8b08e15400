//! The last call that failed on a socket: kept by the socket table, reported with a
//! reset that later breaks the connection.

/// The socket call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Bind,
    Connect,
    Setsockopt,
}

impl Operation {
    /// As the text and JSON output and /v1/sockets name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Connect => "connect",
            Self::Setsockopt => "setsockopt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastError {
    pub operation: Operation,
    pub errno: i32,
    pub ts_ns: u64,
}
