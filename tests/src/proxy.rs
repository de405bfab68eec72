//! A TCP proxy between a runner and its gateway, whose link a test can cut
//! and restore: a real network fault, of one of two kinds.
//!
//! - [`TcpProxy::reset`]: connections are reset and new ones refused, as
//!   when a firewall or the gateway drops them. The runner notices at once.
//! - [`TcpProxy::blackhole`]: bytes stop flowing but nothing is closed, as
//!   when a cable, a VPN or a NAT table loses the link. The runner notices
//!   only when its pings go unanswered.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Reset,
    Blackhole,
}

/// Forwards `127.0.0.1:<port>` to a target until dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, link_rx) = watch::channel(Link::Up);
        let accept = tokio::spawn(accept_loop(listener, target, link_rx));
        TcpProxy { addr, link, accept }
    }

    /// Forwards to the port of a `scheme://host:port` URL on loopback.
    pub async fn to_url(url: &str) -> Self {
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        Self::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection and refuses new ones until
    /// [`TcpProxy::restore`].
    pub fn reset(&self) {
        self.link.send_replace(Link::Reset);
    }

    /// Stops every byte, both ways, on open and new connections, closing
    /// nothing, until [`TcpProxy::restore`].
    pub fn blackhole(&self) {
        self.link.send_replace(Link::Blackhole);
    }

    /// Forwards again. Connections that were blackholed are reset: by now
    /// their ends have given up on them.
    pub fn restore(&self) {
        self.link.send_replace(Link::Up);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections end when they see it.
        self.link.send_replace(Link::Reset);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, link: watch::Receiver<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let link = link.clone();
        tokio::spawn(async move {
            let state = *link.borrow();
            match state {
                Link::Reset => {
                    let _ = inbound.set_zero_linger();
                }
                Link::Blackhole => swallow(inbound, None, link).await,
                Link::Up => forward(inbound, target, link).await,
            }
        });
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, mut link: watch::Receiver<Link>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        let _ = inbound.set_zero_linger();
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
        l = link.wait_for(|l| *l != Link::Up) => l.map(|l| *l).unwrap_or(Link::Reset),
    };
    if cut == Link::Blackhole {
        swallow(inbound, Some(outbound), link).await;
    } else {
        let _ = inbound.set_zero_linger();
        let _ = outbound.set_zero_linger();
    }
}

/// Reads and drops whatever either end sends, so that neither sees an
/// error, until the link changes; then resets both.
async fn swallow(mut a: TcpStream, b: Option<TcpStream>, mut link: watch::Receiver<Link>) {
    let mut b = b;
    let (mut buf_a, mut buf_b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            n = a.read(&mut buf_a) => if matches!(n, Ok(0) | Err(_)) { break },
            n = async {
                match b.as_mut() {
                    Some(b) => b.read(&mut buf_b).await,
                    None => std::future::pending().await,
                }
            } => if matches!(n, Ok(0) | Err(_)) { break },
            _ = link.wait_for(|l| *l != Link::Blackhole) => break,
        }
    }
    let _ = a.set_zero_linger();
    if let Some(b) = b {
        let _ = b.set_zero_linger();
    }
}
