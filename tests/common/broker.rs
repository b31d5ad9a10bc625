//! A real MQTT broker process on a free loopback port, and a subscriber.
//!
//! Mosquitto when it is on PATH (and always when EDGEINFER_TEST_BROKER is
//! `mosquitto`, as in CI), else `edgeinfer broker`.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A broker process.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    conf: Option<PathBuf>,
    mosquitto: bool,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn use_mosquitto() -> bool {
    let required = std::env::var("EDGEINFER_TEST_BROKER").is_ok_and(|v| v == "mosquitto");
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found || !required,
        "EDGEINFER_TEST_BROKER=mosquitto but mosquitto is not on PATH"
    );
    found
}

impl Broker {
    /// A plain broker on a free port.
    pub fn start() -> Broker {
        Self::start_with(|_, port| format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
    }

    /// A Mosquitto broker whose config `conf(dir, port)` writes (TLS,
    /// passwords...); `None` when Mosquitto is not available.
    pub fn start_with(conf: impl Fn(&Path, u16) -> String) -> Broker {
        Self::start_on(free_port(), conf)
    }

    /// Like [`start_with`](Self::start_with), on a given port.
    pub fn start_on(port: u16, conf: impl Fn(&Path, u16) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mosquitto = use_mosquitto();
        let conf_path = mosquitto.then(|| {
            let p = dir.path().join("mosquitto.conf");
            std::fs::write(&p, conf(dir.path(), port)).unwrap();
            p
        });
        let mut b = Broker {
            port,
            child: None,
            conf: conf_path,
            mosquitto,
            _dir: dir,
        };
        b.restart();
        b
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn is_mosquitto(&self) -> bool {
        self.mosquitto
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the process again on the same port.
    pub fn restart(&mut self) {
        let child = if let Some(conf) = &self.conf {
            Command::new("mosquitto")
                .arg("-c")
                .arg(conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        } else {
            Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
                .args(["broker", "--bind", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A subscriber that reconnects (every 20 ms) and resubscribes on its own.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Msg>>>,
    client: Client,
    subscribed: Arc<Mutex<u64>>,
}

impl Subscriber {
    pub fn connect(port: u16, filters: &[&str]) -> Subscriber {
        Self::connect_with(
            MqttOptions::new(format!("test-sub-{}", free_port()), "127.0.0.1", port),
            filters,
        )
    }

    pub fn connect_with(mut opts: MqttOptions, filters: &[&str]) -> Subscriber {
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(0u64));
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        {
            let (messages, subscribed, client) =
                (messages.clone(), subscribed.clone(), client.clone());
            std::thread::spawn(move || loop {
                match conn.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        for f in &filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => *subscribed.lock().unwrap() += 1,
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        messages.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        })
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => return,
                }
            });
        }
        let s = Subscriber {
            messages,
            client,
            subscribed,
        };
        s.wait_for(Duration::from_secs(10), |_| {
            *s.subscribed.lock().unwrap() > 0
        });
        s
    }

    /// Waits until `done(messages)` holds; panics after `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Msg]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.messages.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting; got {:?}",
                self.topics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn on(&self, topic_suffix: &str) -> Vec<Msg> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.ends_with(topic_suffix))
            .cloned()
            .collect()
    }

    fn topics(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.topic.clone())
            .collect()
    }

    /// Publishes a message (QoS 1).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    /// Publishes a retained message (QoS 1).
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .unwrap();
    }

    /// Decoded result records of every postcard batch received, in order.
    pub fn records(&self) -> Vec<edgeinfer::ResultRecord> {
        self.on("/result")
            .iter()
            .flat_map(|m| {
                edgeinfer::ResultBatch::from_postcard(&m.payload)
                    .unwrap()
                    .records
            })
            .collect()
    }
}
