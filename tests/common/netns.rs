//! A Mosquitto broker in a network namespace of its own, reached over a
//! veth pair, so a test can cut the network (the host end of the pair
//! down: packets vanish, no reset, no FIN) and heal it again.
//!
//! Needs root (or CAP_NET_ADMIN), iproute2 and Mosquitto. CI sets
//! EDGEINFER_TEST_NETNS=1, which makes their absence a failure; elsewhere
//! `NetnsBroker::start` returns `None` and the test says it was skipped.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The broker in its namespace.
pub struct NetnsBroker {
    ns: String,
    host_veth: String,
    /// The broker's address, as seen from the host.
    pub ip: String,
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl NetnsBroker {
    /// A broker in a fresh namespace, or `None` (after saying why) where
    /// namespaces cannot be made and they are not required.
    pub fn start() -> Option<NetnsBroker> {
        // Unique per process and per call: tests run in parallel, and
        // several test binaries may run at once.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}x{n}", pid % 100_000);
        let ns = format!("ei{tag}");
        let host_veth = format!("eih{tag}");
        let ns_veth = format!("ein{tag}");
        let net = format!("10.{}.{}", 200 + n % 50, pid % 250);
        let (host_ip, broker_ip) = (format!("{net}.1"), format!("{net}.2"));
        let ok = ip(&["netns", "add", &ns])
            && ip(&[
                "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
            ])
            && ip(&["link", "set", &ns_veth, "netns", &ns])
            && ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth])
            && ip(&["link", "set", &host_veth, "up"])
            && ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{broker_ip}/24"),
                "dev",
                &ns_veth,
            ])
            && ip(&["-n", &ns, "link", "set", &ns_veth, "up"])
            && ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let required = std::env::var_os("EDGEINFER_TEST_NETNS").is_some();
        if !ok {
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &host_veth]);
            assert!(
                !required,
                "EDGEINFER_TEST_NETNS is set but network namespaces cannot be made here"
            );
            super::skip("network namespaces need root and iproute2");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = 1883;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} {broker_ip}\nallow_anonymous true\nmax_queued_messages 100000\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "mosquitto", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = NetnsBroker {
            ns,
            host_veth,
            ip: broker_ip,
            port,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((b.ip.as_str(), port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker in {} did not start",
                b.ns
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(b)
    }

    /// `mqtt://IP:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.ip, self.port)
    }

    /// Cuts the network: packets to and from the broker vanish.
    pub fn cut(&self) {
        assert!(ip(&["link", "set", &self.host_veth, "down"]));
    }

    /// Heals it.
    pub fn heal(&self) {
        assert!(ip(&["link", "set", &self.host_veth, "up"]));
    }
}

impl Drop for NetnsBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `ip netns exec` forks: kill what still runs in the namespace.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
