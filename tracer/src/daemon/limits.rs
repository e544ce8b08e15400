//! How many HTTP connections a listener holds at once, in all and per client address: a
//! client that opens connections and sends nothing (slowloris) fills its own share, not
//! the whole server, so the scraper and the probes still get in.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

/// Who a connection comes from, for the per-client share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Ip(IpAddr),
    /// A unix socket peer (all of them one user: see `serve`).
    Local,
}

/// Why a connection was closed at once, as the metric's `reason` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds its maximum of connections.
    ConnectionLimit,
    /// This client address holds its share already.
    ClientLimit,
    /// A unix socket peer of another user.
    ForeignUser,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Self::ConnectionLimit, Self::ClientLimit, Self::ForeignUser];

    pub fn label(self) -> &'static str {
        match self {
            Self::ConnectionLimit => "connection_limit",
            Self::ClientLimit => "client_limit",
            Self::ForeignUser => "foreign_user",
        }
    }
}

#[derive(Debug)]
pub struct ConnectionLimits {
    total: usize,
    per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// One admitted connection; its slot is free again when this drops.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    client: Client,
}

impl ConnectionLimits {
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self { total, per_client, open: Mutex::default() })
    }

    pub fn admit(self: &Arc<Self>, client: Client) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(Refusal::ConnectionLimit);
        }
        let held = open.by_client.entry(client).or_default();
        if *held >= self.per_client {
            return Err(Refusal::ClientLimit);
        }
        *held += 1;
        open.total += 1;
        Ok(Admitted { limits: Arc::clone(self), client })
    }

    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap();
        (open.total, open.by_client.len())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        // Entries of clients with no connection go: the map holds open connections only.
        if let Some(held) = open.by_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Client {
        Client::Ip(text.parse().unwrap())
    }

    #[test]
    fn one_client_fills_its_share_only() {
        let limits = ConnectionLimits::new(4, 2);
        let slowloris: Vec<Admitted> = (0..2).map(|_| limits.admit(ip("10.0.0.9")).unwrap()).collect();
        assert_eq!(limits.admit(ip("10.0.0.9")).unwrap_err(), Refusal::ClientLimit);
        let scraper = limits.admit(ip("10.0.0.2")).unwrap();
        let probe = limits.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.4")).unwrap_err(), Refusal::ConnectionLimit);
        drop(scraper);
        assert!(limits.admit(ip("10.0.0.4")).is_ok(), "a closed connection frees its slot");
        drop((slowloris, probe));
        assert_eq!(limits.open(), (0, 0), "no client is remembered once its connections closed");
    }

    #[test]
    fn local_peers_share_one_slot_count() {
        let limits = ConnectionLimits::new(8, 1);
        let first = limits.admit(Client::Local).unwrap();
        assert_eq!(limits.admit(Client::Local).unwrap_err(), Refusal::ClientLimit);
        drop(first);
        assert!(limits.admit(Client::Local).is_ok());
    }
}
