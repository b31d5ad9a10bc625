//! A private PostgreSQL server per test: its own data directory, port and
//! socket, started with the installed `initdb` and `pg_ctl`.
//!
//! CI sets EDGEINFER_TEST_POSTGRES and requires a server; elsewhere the
//! tests that need one are skipped when PostgreSQL is not installed.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::broker::free_port;

/// A PostgreSQL server with a database `edgeinfer`, superuser `postgres`
/// and trust authentication, listening on 127.0.0.1. Stopped on drop.
pub struct Postgres {
    /// The TCP port, kept across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again).
    pub port: u16,
    bindir: PathBuf,
    /// The system user the server runs as when the tests run as root.
    run_as: Option<String>,
    running: bool,
    dir: tempfile::TempDir,
}

/// How many ports to try when another process takes the free one first.
const START_ATTEMPTS: usize = 5;

extern "C" {
    fn geteuid() -> u32;
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { geteuid() == 0 }
}

fn required() -> bool {
    std::env::var_os("EDGEINFER_TEST_POSTGRES").is_some()
}

/// Panics when CI requires PostgreSQL, else reports the skip.
fn unavailable(reason: &str) -> Option<Postgres> {
    assert!(
        !required(),
        "EDGEINFER_TEST_POSTGRES is set but {reason}; install Debian's `postgresql`"
    );
    super::skip(&format!("{reason}; install PostgreSQL to run it"));
    None
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

fn has_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// The directory of `initdb` and `pg_ctl`. Debian keeps them out of PATH
/// in /usr/lib/postgresql/VERSION/bin, hence the fallbacks.
fn find_bindir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if has_tools(&dir) {
            // Symlinks into PATH (as /usr/local/bin may hold) lead to the
            // real bindir, which also has psql of the same version.
            let real = dir
                .join("initdb")
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_tools(d));
            return Some(real.unwrap_or(dir));
        }
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| has_tools(d));
    if from_pg_config.is_some() {
        return from_pg_config;
    }
    let version = |p: &Path| -> Vec<u32> {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.split('.').map(|n| n.parse().unwrap_or(0)).collect()
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| has_tools(&p.join("bin")))
        .collect();
    // Numerically, so that 15 beats 9.6.
    dirs.sort_by_key(|p| version(p));
    dirs.pop().map(|p| p.join("bin"))
}

/// uid and gid of `user` from /etc/passwd.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.split(':').next() == Some(user))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Postgres {
    /// Starts a new server on a free port; `None` (after reporting the
    /// skip) when PostgreSQL is not installed, and a panic instead when
    /// EDGEINFER_TEST_POSTGRES is set.
    pub fn start() -> Option<Postgres> {
        let Some(bindir) = find_bindir() else {
            return unavailable(
                "initdb and pg_ctl are not in PATH, pg_config --bindir or /usr/lib/postgresql/*/bin",
            );
        };
        // initdb and postgres refuse to run as root.
        let (run_as, dir) = if is_root() {
            let Some((uid, gid)) = lookup_user("postgres") else {
                return unavailable("the tests run as root and there is no `postgres` user");
            };
            if !on_path("runuser") {
                return unavailable("the tests run as root and runuser (util-linux) is missing");
            }
            // Under /tmp rather than TMPDIR: the `postgres` user must be
            // able to traverse every parent directory.
            let dir = tempfile::Builder::new()
                .prefix("edgeinfer-pg")
                .tempdir_in("/tmp")
                .expect("temp dir for PostgreSQL");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir");
            (Some("postgres".to_string()), dir)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("edgeinfer-pg")
                .tempdir()
                .expect("temp dir for PostgreSQL");
            (None, dir)
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the PostgreSQL temp dir");

        let mut pg = Postgres {
            port: 0,
            bindir,
            run_as,
            running: false,
            dir,
        };
        pg.initdb();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => {
                    pg.create_database();
                    return Some(pg);
                }
                // The port went to another process between free_port() and
                // the bind: take another one.
                Err((true, report)) => last = report,
                Err((false, report)) => panic!("PostgreSQL did not start:\n{report}"),
            }
        }
        panic!("PostgreSQL found no free port in {START_ATTEMPTS} attempts:\n{last}");
    }

    /// `postgres://postgres@127.0.0.1:PORT/edgeinfer`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/edgeinfer", self.port)
    }

    /// The temporary directory that holds the data directory, the socket
    /// and the server log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far (stderr of every start in this directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: clients are disconnected, the data
    /// is checkpointed) and waits until it is gone.
    pub fn stop(&mut self) {
        let o = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        assert!(
            o.status.success(),
            "pg_ctl stop failed: {}{}\n{}",
            text(&o.stdout),
            text(&o.stderr),
            self.log()
        );
        self.running = false;
    }

    /// Starts the stopped server again on the same data directory and port.
    pub fn start_again(&mut self) {
        assert!(!self.running, "start_again() on a running server");
        if let Err((_, report)) = self.try_start() {
            panic!(
                "PostgreSQL did not start again on port {}:\n{report}",
                self.port
            );
        }
    }

    /// Runs `psql -At -c SQL` against the `edgeinfer` database and returns
    /// its stdout without the final newline (`"3"` for a count); panics
    /// with psql's stderr when the statement fails.
    pub fn psql(&self, sql: &str) -> String {
        let o = self.psql_on("edgeinfer", sql);
        assert!(
            o.status.success(),
            "psql failed on {sql:?}: {}",
            text(&o.stderr)
        );
        let out = text(&o.stdout);
        out.strip_suffix('\n').unwrap_or(&out).to_string()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A server program from the bindir, as the `postgres` user when root.
    fn server_cmd(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // The tests' working directory (the repository, maybe under /root)
        // may be closed to the `postgres` user: initdb then warns that it
        // "could not change directory".
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    fn initdb(&self) {
        let o = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(self.data())
            // Trust: the tests connect as `postgres` without a password.
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            // Independent of the machine's (often missing) locales.
            .arg("--no-locale")
            // Only initdb's own final sync of the new cluster: the server
            // still runs with fsync on, which is what the tests measure.
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            o.status.success(),
            "initdb failed: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // Written by this process (maybe root) but read by the server: 0644
        // in a directory the server owns is enough.
        let conf = format!(
            "\n# edgeinfer tests\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             # The tests measure durability: never trade it for speed.\n\
             fsync = on\n\
             synchronous_commit = on\n\
             # Several servers run side by side on small machines.\n\
             shared_buffers = 16MB\n\
             max_connections = 50\n",
            self.dir.path().display()
        );
        let path = self.data().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&path).expect("read postgresql.conf");
        all.push_str(&conf);
        std::fs::write(&path, all).expect("write postgresql.conf");
    }

    /// `pg_ctl start` on `self.port`, waiting until connections are
    /// accepted. On failure: whether the port was taken, and a report with
    /// the server log.
    fn try_start(&mut self) -> Result<(), (bool, String)> {
        let port = format!("-p {}", self.port);
        let log = self.log_path();
        // Earlier attempts' lines stay in the log: only this one's count.
        let before = self.log().len();
        let o = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-o",
            &port,
            "-l",
            log.to_str().expect("UTF-8 temp dir"),
        ]);
        if o.status.success() {
            self.running = true;
            return Ok(());
        }
        let all = self.log();
        let in_use = all
            .get(before..)
            .is_some_and(|new| new.contains("Address already in use"));
        let report = format!(
            "{}{}\n--- {} ---\n{all}",
            text(&o.stdout),
            text(&o.stderr),
            log.display()
        );
        Err((in_use, report))
    }

    fn psql_on(&self, db: &str, sql: &str) -> Output {
        let local = self.bindir.join("psql");
        let exe = if local.is_file() {
            local
        } else {
            PathBuf::from("psql")
        };
        Command::new(exe)
            // No ~/.psqlrc: its settings would change the output.
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    fn create_database(&self) {
        let o = self.psql_on("postgres", "CREATE DATABASE edgeinfer");
        assert!(
            o.status.success(),
            "CREATE DATABASE edgeinfer failed: {}\n{}",
            text(&o.stderr),
            self.log()
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            // Immediate: the data is thrown away with the temp dir. Errors
            // are ignored, a panic here would abort the test binary.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
    }
}
