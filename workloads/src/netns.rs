//! The scenario's own network namespace: created by the runner, inherited by its actors,
//! gone when the last of them exits.

use std::os::fd::AsRawFd;

use nix::sched::{CloneFlags, unshare};
use socket2::{Domain, Socket, Type};

use super::Error;

// SIOCGIFFLAGS / SIOCSIFFLAGS take a struct ifreq (netdevice(7)).
nix::ioctl_read_bad!(get_if_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Moves the calling process into a new, empty network namespace with `lo` up.
///
/// Must run before any actor is spawned (children inherit the namespace) and while the
/// process is single-threaded (unshare affects the calling thread only).
pub fn enter_new() -> Result<u64, Error> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(Error::Unshare)?;
    loopback_up()?;
    current_inode()
}

/// Inode of /proc/self/ns/net: what sockerr reports as `netns`.
pub fn current_inode() -> Result<u64, Error> {
    let path = "/proc/self/ns/net";
    std::fs::metadata(path)
        .map(|meta| std::os::unix::fs::MetadataExt::ino(&meta))
        .map_err(|source| Error::Read { path: path.into(), source })
}

/// A new namespace's lo is down: nothing, not even 127.0.0.1, is reachable until it is up.
/// Bringing it up also adds ::1 (addrconf's init_loopback).
fn loopback_up() -> Result<(), Error> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(Error::LoopbackUp)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    let fail = |e: nix::Error| Error::LoopbackUp(std::io::Error::from(e));
    // SAFETY: the fd is a live socket and `request` a valid, named ifreq.
    unsafe { get_if_flags(socket.as_raw_fd(), &mut request) }.map_err(fail)?;
    // SAFETY: the union member ifru_flags is what SIOCGIFFLAGS filled in.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    unsafe { set_if_flags(socket.as_raw_fd(), &request) }.map_err(fail)?;
    Ok(())
}

/// Writes a sysctl of the current network namespace (/proc/sys/net is per namespace).
pub fn write_sysctl(path: &str, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|source| Error::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

pub fn read_sysctl(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| Error::Read { path: path.into(), source })
}
