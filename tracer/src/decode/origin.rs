//! The kprobe backend's view of a refused bind()/connect() (`tracer_common::KernelOrigin`).
//!
//! The model type lives in `event`; its wire conversion lives here, with the rest of
//! the decoding.

use tracer_common::{KernelOrigin, origin::function_name};

use super::sockaddr::socket_addr;
use crate::event::Origin;

impl Origin {
    /// `None` when no kretprobe saw the failure (tracepoint backend, other errors).
    pub(crate) fn decode(raw: &KernelOrigin) -> Option<Self> {
        let function = function_name(raw.function)?;
        let dst = socket_addr(&raw.dst).filter(|addr| addr.port() != 0 || !addr.ip().is_unspecified());
        Some(Self {
            function,
            ret: raw.ret,
            state: raw.state,
            reuse: raw.reuse != 0,
            reuseport: raw.reuseport != 0,
            mark: raw.mark,
            src: socket_addr(&raw.src),
            dst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::raw_sockaddr;

    #[test]
    fn origin_names_its_function_and_drops_an_unset_peer() {
        let raw = KernelOrigin {
            function: tracer_common::origin::FN_INET_CSK_GET_PORT,
            ret: 1,
            state: 7,
            reuse: 1,
            reuseport: 0,
            _pad: 0,
            mark: 0x0b00,
            src: raw_sockaddr("127.0.0.19:0".parse().unwrap()),
            dst: raw_sockaddr("0.0.0.0:0".parse().unwrap()),
        };
        let origin = Origin::decode(&raw).unwrap();
        assert_eq!(origin.function, "inet_csk_get_port");
        assert_eq!(
            (origin.ret, origin.state, origin.reuse, origin.reuseport, origin.mark),
            (1, 7, true, false, 0x0b00)
        );
        assert_eq!(origin.src, Some("127.0.0.19:0".parse().unwrap()));
        assert_eq!(origin.dst, None);
        assert_eq!(Origin::decode(&KernelOrigin::default()), None, "tracepoint backend");
    }
}
