//! Test hosts in network namespaces: a runner network that can reach the
//! hub (through a veth to this namespace) and a node network that only the
//! runner network can reach. Only the veths made here get addresses, and
//! everything is removed on drop, even when the test fails.

use std::process::Command;

pub struct ZeroTrustNet {
    pub runner_ns: String,
    pub node_ns: String,
    root_veth: String,
    /// This namespace's end of the hub link: NATS listens here.
    pub hub_ip: String,
    /// The node's address, inside `node_ns`.
    pub node_ip: String,
    node_net: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl ZeroTrustNet {
    /// Builds the two namespaces and links, or panics saying why: a test
    /// that cannot isolate the node must not pass as if it had.
    pub fn create() -> Self {
        let id = std::process::id() % 100_000;
        let k = (id % 200) + 20;
        let net = ZeroTrustNet {
            runner_ns: format!("op-rn-{id}"),
            node_ns: format!("op-nn-{id}"),
            root_veth: format!("opa{id}"),
            hub_ip: format!("10.233.{k}.1"),
            node_ip: format!("10.234.{k}.2"),
            node_net: format!("10.234.{k}.0/30"),
        };
        if let Err(e) = net.build(id, k) {
            panic!(
                "ZERO-TRUST TEST CANNOT RUN: creating network namespaces failed ({e}). \
                 It needs root and iproute2 (`ip netns`); it fails rather than pretend."
            );
        }
        net
    }

    fn build(&self, id: u32, k: u32) -> Result<(), String> {
        let (rn, nn) = (self.runner_ns.as_str(), self.node_ns.as_str());
        // This namespace (the control plane's network) gets an explicit "no
        // route" to the node network, as a firewall would give it. Without
        // it, a probe would follow the default route off this machine.
        ip(&["route", "add", "unreachable", &self.node_net])?;
        let (a, b, c, d) = (
            self.root_veth.clone(),
            format!("opb{id}"),
            format!("opc{id}"),
            format!("opd{id}"),
        );
        ip(&["netns", "add", rn])?;
        ip(&["netns", "add", nn])?;
        // hub link: this namespace <-> runner network
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &b, "netns", rn])?;
        ip(&["addr", "add", &format!("{}/30", self.hub_ip), "dev", &a])?;
        ip(&["link", "set", &a, "up"])?;
        ip(&[
            "netns",
            "exec",
            rn,
            "ip",
            "addr",
            "add",
            &format!("10.233.{k}.2/30"),
            "dev",
            &b,
        ])?;
        ip(&["netns", "exec", rn, "ip", "link", "set", &b, "up"])?;
        ip(&["netns", "exec", rn, "ip", "link", "set", "lo", "up"])?;
        // node link: runner network <-> node network, and nothing else
        ip(&["link", "add", &c, "type", "veth", "peer", "name", &d])?;
        ip(&["link", "set", &c, "netns", rn])?;
        ip(&["link", "set", &d, "netns", nn])?;
        ip(&[
            "netns",
            "exec",
            rn,
            "ip",
            "addr",
            "add",
            &format!("10.234.{k}.1/30"),
            "dev",
            &c,
        ])?;
        ip(&["netns", "exec", rn, "ip", "link", "set", &c, "up"])?;
        ip(&[
            "netns",
            "exec",
            nn,
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.node_ip),
            "dev",
            &d,
        ])?;
        ip(&["netns", "exec", nn, "ip", "link", "set", &d, "up"])?;
        ip(&["netns", "exec", nn, "ip", "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for ZeroTrustNet {
    fn drop(&mut self) {
        for ns in [&self.runner_ns, &self.node_ns] {
            // Anything still running in the namespace goes first.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on a process in our own test namespace.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.root_veth]);
        let _ = ip(&["route", "del", "unreachable", &self.node_net]);
    }
}
