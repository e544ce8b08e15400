//! The daemon's listening sockets: the scrape port (`--listen`) and the socket table's own
//! listener (`--api-listen`), which serves /v1/* without authentication and so is only
//! ever a loopback address or a unix socket.

use std::{
    io,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use thiserror::Error;
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::cli::{ApiListen, DEFAULT_API_LISTEN, DEFAULT_LISTEN};

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} for {what}: {fix}")]
    Tcp {
        addr: SocketAddr,
        what: &'static str,
        fix: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on unix:{} for the socket table: {fix}", path.display())]
    Unix {
        path: PathBuf,
        fix: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unix:{} is in use by a running process (another sockerr daemon?): stop it or choose another path with --api-listen unix:PATH", path.display())]
    UnixInUse { path: PathBuf },
}

/// Binds the scrape port.
pub async fn bind_scrape(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    bind_tcp(addr, "the HTTP endpoints", "--listen").await
}

/// A bound socket-table listener.
pub enum ApiListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds `--api-listen`; `None` for `none`.
pub async fn bind_api(listen: &ApiListen) -> Result<Option<ApiListener>, ListenError> {
    match listen {
        ApiListen::Off => Ok(None),
        ApiListen::Tcp(addr) => {
            Ok(Some(ApiListener::Tcp(bind_tcp(*addr, "the socket table", "--api-listen").await?)))
        }
        ApiListen::Unix(path) => Ok(Some(ApiListener::Unix(bind_unix(path).await?))),
    }
}

async fn bind_tcp(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, ListenError> {
    let error = |source: io::Error| ListenError::Tcp { addr, what, fix: tcp_fix(&source, flag), source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    Ok(listener)
}

fn tcp_fix(source: &io::Error, flag: &str) -> String {
    match source.kind() {
        io::ErrorKind::AddrInUse => format!(
            "the port is taken (another sockerr daemon?): stop that process or choose a free port with {flag} ADDR"
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "no interface of this host has that address: choose one it has with {flag} ADDR (default {})",
            if flag == "--listen" { DEFAULT_LISTEN } else { DEFAULT_API_LISTEN }
        ),
        io::ErrorKind::PermissionDenied => {
            format!("ports below 1024 need CAP_NET_BIND_SERVICE: choose a higher port with {flag} ADDR")
        }
        _ => format!("choose another address with {flag} ADDR"),
    }
}

/// Binds a unix socket readable and writable by this user only. A socket file left by a
/// daemon that died is replaced; one a live process serves is not.
async fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let error =
        |fix: &'static str| move |source: io::Error| ListenError::Unix { path: path.to_owned(), fix, source };
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(ListenError::Unix {
                path: path.to_owned(),
                fix: "a file that is no socket is in the way: choose another path",
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::UnixInUse { path: path.to_owned() });
        }
        std::fs::remove_file(path).map_err(error("cannot remove the stale socket file"))?;
    }
    let listener = UnixListener::bind(path).map_err(error("does its directory exist and is it writable?"))?;
    // Between bind and chmod the file has the umask's mode: connections made in that
    // window still meet the SO_PEERCRED check of the server.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(error("cannot make the socket file private (chmod 0600)"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_address_the_flag_and_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let message = bind_scrape(addr).await.unwrap_err().to_string();
        assert!(message.starts_with(&format!("cannot listen on {addr} for the HTTP endpoints")), "{message}");
        assert!(message.contains("--listen ADDR"), "{message}");
        let message = bind_api(&ApiListen::Tcp(addr)).await.err().unwrap().to_string();
        assert!(
            message.contains("for the socket table") && message.contains("--api-listen ADDR"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn unix_sockets_are_private_and_replace_only_stale_files() {
        let dir = std::env::temp_dir().join(format!("sockerr-listeners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let listen = ApiListen::Unix(path.clone());
        let first = bind_api(&listen).await.unwrap().expect("a listener");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let in_use = bind_api(&listen).await.err().unwrap();
        assert!(matches!(in_use, ListenError::UnixInUse { .. }), "{in_use}");
        drop(first);
        // The file stays behind when a listener goes away: a stale one is replaced.
        assert!(path.exists());
        assert!(bind_api(&listen).await.unwrap().is_some());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        let blocked = bind_api(&listen).await.err().unwrap().to_string();
        assert!(blocked.contains("no socket is in the way"), "{blocked}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
