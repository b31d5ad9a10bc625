//! `edgeinfer-host dashboard`: one live page for the fleet.
//!
//! Two threads: a plain std thread calls the caller's snapshot closure every
//! `refresh` (the PostgreSQL client blocks, so it must stay out of the async
//! runtime) and stores the serialized JSON; the calling thread runs a
//! current-thread tokio runtime with axum, whose handlers only copy that JSON
//! out. A page poll therefore never waits on the database.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::host::HostError;

/// The page, embedded so the binary is all there is to deploy.
const PAGE: &str = include_str!("dashboard.html");

/// The page loads nothing from elsewhere; saying so to the browser means a
/// label or device id that slipped past escaping still cannot fetch or post
/// anywhere.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long open connections get to finish once `stop` is set. Idle
/// keep-alive connections close at once; this bounds the wait for a client
/// that sent half a request and went quiet.
const DRAIN: Duration = Duration::from_secs(2);

/// How often the stop flag is looked at; also bounds how long `stop` takes
/// to be noticed while a snapshot thread waits for its next refresh.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Serves the fleet page on `listen` until `stop` is set.
///
/// `snapshot` is called from one plain std thread (never inside the async
/// runtime) every `refresh`, and the page's polls get the newest snapshot; a
/// failing snapshot keeps serving the last good one with its `"error"` field
/// set to the failure, and logs it. Once listening, prints
/// `dashboard on http://ADDR/` to stderr with the bound address.
///
/// Routes: `GET /` (the page), `GET /api/fleet` (the newest snapshot, not
/// cacheable); anything else is 404. When `stop` is set, open connections
/// get up to 2 s to finish, the snapshot thread is joined (so a snapshot in
/// progress is waited for) and `Ok(())` is returned.
pub fn serve(
    listen: &str,
    snapshot: Box<dyn FnMut() -> Result<Value, String> + Send>,
    refresh: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), HostError> {
    let (listener, addr) = bind(listen)?;
    eprintln!("dashboard on http://{addr}/");
    serve_on(listener, addr, snapshot, refresh, stop)
}

/// Binds `listen` (`HOST:PORT`; port 0 picks a free one) and returns the
/// listener with the address actually bound.
fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), HostError> {
    let usage = |why: String| {
        HostError::Usage(format!(
            "--listen {listen}: expected HOST:PORT such as 127.0.0.1:8080 ({why})"
        ))
    };
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| usage(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(usage("no address".into()));
    }
    let cannot = |e: std::io::Error| HostError::Input {
        file: "--listen".into(),
        message: format!("cannot listen on {listen}: {e}"),
    };
    let listener = TcpListener::bind(&addrs[..]).map_err(cannot)?;
    // tokio requires non-blocking sockets for listeners it adopts.
    listener.set_nonblocking(true).map_err(cannot)?;
    let addr = listener.local_addr().map_err(cannot)?;
    Ok((listener, addr))
}

/// [`serve`] on a listener that is already bound to `addr`.
fn serve_on(
    listener: TcpListener,
    addr: SocketAddr,
    snapshot: Box<dyn FnMut() -> Result<Value, String> + Send>,
    refresh: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), HostError> {
    let fail = |message: String| HostError::Output {
        file: format!("http://{addr}/"),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| fail(format!("cannot start the web server: {e}")))?;
    let latest = Arc::new(Latest::default());
    // Our own flag, so the snapshot thread also ends when the server fails
    // without the caller's `stop` being set.
    let done = Arc::new(AtomicBool::new(false));
    let refresher = {
        let (latest, stop, done) = (latest.clone(), stop.clone(), done.clone());
        std::thread::Builder::new()
            .name("dashboard-snapshot".into())
            .spawn(move || refresh_loop(snapshot, refresh, &latest, &stop, &done))
            .map_err(|e| fail(format!("cannot start the snapshot thread: {e}")))?
    };
    let result = runtime.block_on(run(listener, latest, stop));
    // Dropping the runtime closes connections still open after DRAIN.
    drop(runtime);
    done.store(true, Ordering::Relaxed);
    // Joined so the closure (and the database client it owns) is gone
    // before the caller goes on.
    if refresher.join().is_err() {
        log::warn!("dashboard: the snapshot thread panicked");
    }
    result.map_err(fail)
}

/// Runs the server until `stop` is set, then drains for at most [`DRAIN`].
async fn run(
    listener: TcpListener,
    latest: Arc<Latest>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("cannot serve on the listener: {e}"))?;
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router(latest))
                .with_graceful_shutdown(stopped(stop))
                .await
        })
    };
    // A spawned task rather than awaiting in place: the drain deadline has
    // to start when `stop` is seen, not when serving starts.
    while !stop.load(Ordering::Relaxed) && !server.is_finished() {
        tokio::time::sleep(STOP_POLL).await;
    }
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("web server failed: {e}")),
        Ok(Err(e)) => Err(format!("web server failed: {e}")),
        Err(_) => {
            log::info!("dashboard: closing connections still open after {DRAIN:?}");
            Ok(())
        }
    }
}

/// Resolves once `stop` is set.
async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// The routes; anything else falls through to axum's empty 404.
fn router(latest: Arc<Latest>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/fleet", get(fleet))
        .with_state(latest)
}

/// `GET /`.
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(PAGE),
    )
}

/// `GET /api/fleet`.
async fn fleet(State(latest): State<Arc<Latest>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        latest.get(),
    )
}

/// The body `/api/fleet` answers, serialized once per refresh rather than
/// once per poll.
struct Latest(Mutex<Bytes>);

impl Default for Latest {
    fn default() -> Self {
        // No error: nothing is wrong yet, and the page says it is waiting.
        Latest(Mutex::new(Bytes::from(placeholder(None).to_string())))
    }
}

impl Latest {
    fn get(&self) -> Bytes {
        // A poisoned lock still holds a complete body: it is only ever
        // replaced whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, body: Bytes) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = body;
    }
}

/// What the page gets before any snapshot succeeded: the shape it expects,
/// with nothing in it.
fn placeholder(error: Option<&str>) -> Value {
    json!({"now_ms": null, "error": error, "totals": null, "devices": []})
}

/// Calls `snapshot` every `refresh` until `stop` or `done` is set.
fn refresh_loop(
    mut snapshot: Box<dyn FnMut() -> Result<Value, String> + Send>,
    refresh: Duration,
    latest: &Latest,
    stop: &AtomicBool,
    done: &AtomicBool,
) {
    let halted = || stop.load(Ordering::Relaxed) || done.load(Ordering::Relaxed);
    let mut last_good = None;
    let mut last_error: Option<String> = None;
    while !halted() {
        let started = Instant::now();
        // A panicking snapshot must not leave the page showing old data as
        // if it were current.
        let result = catch_unwind(AssertUnwindSafe(&mut snapshot))
            .unwrap_or_else(|_| Err("the snapshot panicked".into()));
        match &result {
            // Once per distinct message: a database that is down would
            // otherwise log every refresh.
            Err(e) if last_error.as_ref() != Some(e) => {
                log::warn!("dashboard: snapshot failed: {e}");
                last_error = Some(e.clone());
            }
            Err(_) => {}
            Ok(_) => {
                if last_error.take().is_some() {
                    log::info!("dashboard: snapshots work again");
                }
            }
        }
        latest.set(publish(&mut last_good, result));
        while !halted() {
            let left = refresh.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
    }
}

/// The body to serve after one snapshot attempt. On failure it is the last
/// good snapshot with `"error"` set, so the page keeps its rows and says why
/// they are not moving.
fn publish(last_good: &mut Option<Value>, result: Result<Value, String>) -> Bytes {
    let value = match result {
        Ok(value) => {
            let body = serde_json::to_vec(&value);
            *last_good = Some(value);
            return match body {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    Bytes::from(placeholder(Some(&format!("cannot encode: {e}"))).to_string())
                }
            };
        }
        Err(error) => match last_good.clone() {
            Some(Value::Object(mut map)) => {
                map.insert("error".into(), Value::String(error));
                Value::Object(map)
            }
            _ => placeholder(Some(&error)),
        },
    };
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::mpsc;

    fn fleet_json() -> Value {
        json!({
            "now_ms": 1764460000000u64,
            "error": null,
            "totals": {"devices": 1, "online": 1, "results": 4000, "results_per_s": 13.8, "bytes_per_s": 300.0},
            "devices": [{
                "id": "sim-001", "online": true, "model": "model.onnx",
                "model_sha256": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
                "first_seen_ms": 1764450000000u64, "last_seen_ms": 1764459999000u64,
                "results": 4000, "results_per_s": 13.8, "bytes_per_s": 300.0,
                "last": {"seq": 4000, "ts_ms": 1764459999000u64, "class": 1, "label": "run", "score": 0.93, "values": null},
                "timeline": [[1764459990000u64, 1, "run"], [1764459991000u64, 0, "idle"]]
            }]
        })
    }

    /// A running server: its address, its stop flag and a receiver for what
    /// `serve_on` returned.
    struct Running {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        result: mpsc::Receiver<Result<(), HostError>>,
    }

    impl Running {
        fn start(snapshot: Box<dyn FnMut() -> Result<Value, String> + Send>) -> Running {
            let (listener, addr) = bind("127.0.0.1:0").expect("bind");
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, result) = mpsc::channel();
            let flag = stop.clone();
            std::thread::spawn(move || {
                let r = serve_on(listener, addr, snapshot, Duration::from_millis(20), flag);
                let _ = tx.send(r);
            });
            Running { addr, stop, result }
        }

        fn get(&self, path: &str) -> (u16, String, String) {
            get(self.addr, path)
        }

        /// Polls `/api/fleet` until `ok` accepts it.
        fn fleet_until(&self, ok: impl Fn(&Value) -> bool) -> Value {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, _, body) = self.get("/api/fleet");
                assert_eq!(status, 200);
                let v: Value = serde_json::from_str(&body).expect("JSON");
                if ok(&v) {
                    return v;
                }
                assert!(Instant::now() < deadline, "never got there; last: {v}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            let r = self
                .result
                .recv_timeout(Duration::from_secs(10))
                .expect("serve returns after stop");
            assert!(r.is_ok(), "{r:?}");
        }
    }

    /// A hand-written HTTP/1.1 GET: status, headers (lower-cased) and body.
    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn serves_the_page_the_snapshot_and_404() {
        let server = Running::start(Box::new(|| Ok(fleet_json())));

        let (status, head, page) = server.get("/");
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert!(page.contains("\"device\""), "rows get class device");
        for hook in [
            "\"state\"",
            "\"timeline\"",
            "\"label\"",
            "\"last\"",
            "\"model\"",
        ] {
            assert!(page.contains(hook), "{hook} missing");
        }
        for id in ["id=\"devices\"", "id=\"online\"", "id=\"rate\""] {
            assert!(page.contains(id), "{id} missing");
        }
        assert!(page.contains("fetch("));
        assert!(
            !page.contains("innerHTML"),
            "device text goes in via textContent"
        );
        // No CDN, fonts or other hosts; not even a namespace URL to audit.
        assert!(!page.contains("http:") && !page.contains("https:") && !page.contains("//cdn"));

        let v = server.fleet_until(|v| v["devices"][0]["id"] == "sim-001");
        assert_eq!(v, fleet_json());
        let (_, head, _) = server.get("/api/fleet");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");

        assert_eq!(server.get("/nope").0, 404);
        assert_eq!(server.get("/api/fleet/x").0, 404);
        server.stop();
    }

    #[test]
    fn a_failing_snapshot_keeps_the_last_good_one_and_says_why() {
        // The test hands out each snapshot result, so the order is exact.
        let (tx, rx) = mpsc::channel::<Result<Value, String>>();
        let rx = Mutex::new(rx);
        let server = Running::start(Box::new(move || {
            let rx = rx.lock().map_err(|_| "poisoned".to_string())?;
            rx.recv().unwrap_or_else(|_| Err("test over".into()))
        }));

        tx.send(Err("db down".into())).expect("send");
        let v = server.fleet_until(|v| v["error"] == "db down");
        assert_eq!(v["devices"], json!([]));

        tx.send(Ok(fleet_json())).expect("send");
        server.fleet_until(|v| v == &fleet_json());

        tx.send(Err("db down again".into())).expect("send");
        let v = server.fleet_until(|v| v["error"] == "db down again");
        assert_eq!(v["devices"], fleet_json()["devices"]);
        assert_eq!(v["totals"], fleet_json()["totals"]);

        drop(tx);
        server.stop();
    }

    #[test]
    fn stop_is_noticed_even_with_a_half_sent_request() {
        let server = Running::start(Box::new(|| Ok(fleet_json())));
        let mut idle = TcpStream::connect(server.addr).expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        server.fleet_until(|v| v["devices"][0]["id"] == "sim-001");
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < DRAIN + Duration::from_secs(2));
    }

    #[test]
    fn a_panicking_snapshot_is_reported_not_fatal() {
        let server = Running::start(Box::new(|| -> Result<Value, String> { panic!("boom") }));
        server.fleet_until(|v| v["error"] == "the snapshot panicked");
        server.stop();
    }

    #[test]
    fn bad_listen_addresses() {
        assert!(matches!(bind("not an address"), Err(HostError::Usage(_))));
        assert!(matches!(bind("127.0.0.1"), Err(HostError::Usage(_))));
        let (_held, addr) = bind("127.0.0.1:0").expect("bind");
        let taken = bind(&addr.to_string());
        assert!(matches!(taken, Err(HostError::Input { .. })), "{taken:?}");
    }

    #[test]
    fn publish_keeps_the_last_good_snapshot() {
        let waiting: Value = serde_json::from_slice(&Latest::default().get()).unwrap();
        assert_eq!(waiting["error"], Value::Null, "waiting is not an error");
        assert_eq!(waiting["devices"], json!([]));
        let mut last = None;
        let first: Value = serde_json::from_slice(&publish(&mut last, Err("x".into()))).unwrap();
        assert_eq!(first, placeholder(Some("x")));
        publish(&mut last, Ok(fleet_json()));
        let failed: Value = serde_json::from_slice(&publish(&mut last, Err("y".into()))).unwrap();
        let mut expected = fleet_json();
        expected["error"] = json!("y");
        assert_eq!(failed, expected);
    }
}
