//! The control socket: a Unix stream socket, one JSON [`Command`] line in, one JSON [`Reply`]
//! line out, then the connection closes.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};

use super::{Answer, Command, Reply};

/// Longest command line accepted, in bytes (a command is a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client waits for the reply: a full reload of a million-SIM policy takes seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// A command with the channel its answer goes back on.
pub type Request = (Command, oneshot::Sender<Answer>);

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another daemon answers on the socket.
    #[error(
        "another enforcer daemon listens on {}; stop it first, or give this one its own --socket",
        path.display()
    )]
    InUse {
        /// Socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path: never removed.
    #[error(
        "{} exists and is not a socket; give --socket a path of its own (nothing there was \
         touched)",
        path.display()
    )]
    NotASocket {
        /// Socket path.
        path: PathBuf,
    },
    /// No daemon answers.
    #[error(
        "no enforcer daemon answers on {}: is `enforcer run` running (`systemctl status \
         enforcer`)? If it was started with --socket, give the same --socket here",
        path.display()
    )]
    NoDaemon {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating, reading or writing the socket failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The daemon's reply was not understood (a different `enforcer` version?).
    #[error(
        "the daemon on {} sent a reply this `enforcer` does not understand ({detail}); use the \
         client of the same version as the daemon",
        path.display()
    )]
    BadReply {
        /// Socket path.
        path: PathBuf,
        /// Parser message.
        detail: String,
    },
}

/// Create the listening socket at `path`, mode 0600, in a directory created mode 0700 if
/// missing. A socket file left by a daemon that died is replaced; one a live daemon answers on
/// is not.
///
/// # Errors
/// [`ControlError::InUse`] when a daemon answers on it; [`ControlError::Io`] otherwise.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    let io_err = |what: &'static str| {
        move |source| ControlError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(io_err("creating the directory of"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("restricting the directory of"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io_err("removing the stale socket"))?;
    }
    // No window in which others may connect: the socket is created with umask 0177.
    // SAFETY: umask only changes this process's file creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let listener = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(io_err("listening on"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("restricting"))?;
    Ok(listener)
}

/// Connections served at once; more wait in the kernel's backlog. A client that holds a
/// connection without sending its command is dropped after [`REQUEST_TIMEOUT`].
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its command line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections forever, handing each command to `actor` and writing its reply back.
/// Connections are served concurrently (at most [`MAX_CONNECTIONS`]); the actor still applies
/// commands one at a time. An `accept` error (out of descriptors) backs off instead of
/// spinning.
pub async fn serve(listener: tokio::net::UnixListener, actor: mpsc::Sender<Request>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "Accepting a control connection failed; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let actor = actor.clone();
        tokio::spawn(async move {
            if let Err(err) = connection(stream, actor).await {
                tracing::debug!(error = %err, "control connection ended early");
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: tokio::net::UnixStream,
    actor: mpsc::Sender<Request>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut wait = REQUEST_TIMEOUT;
    loop {
        let mut bytes = Vec::new();
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        let n = tokio::time::timeout(wait, limited.read_until(b'\n', &mut bytes))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no command within the timeout")
            })??;
        if n == 0 {
            break;
        }
        wait = IDLE_TIMEOUT;
        let oversized = bytes.len() > MAX_REQUEST;
        let answer = answer(&bytes, &actor).await;
        let mut out = serde_json::to_vec(&answer.reply).map_err(io::Error::other)?;
        out.push(b'\n');
        // A client that sends commands but never reads its replies fills the socket buffer:
        // drop it rather than hold one of the connection slots for ever.
        tokio::time::timeout(REPLY_TIMEOUT, write.write_all(&out))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the client reads no replies")
            })??;
        if let Some(mut rows) = answer.rows {
            // A reader that stops reading is dropped after the timeout; dropping `rows` ends
            // the thread that formats them. The rows run to the end of the connection.
            while let Some(chunk) = rows.recv().await {
                tokio::time::timeout(ROWS_TIMEOUT, write.write_all(&chunk))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the reader stalled"))??;
            }
            break;
        }
        if oversized {
            // The rest of that line would read as commands: end here.
            break;
        }
    }
    write.shutdown().await
}

/// The actor's answer to one command line.
async fn answer(bytes: &[u8], actor: &mpsc::Sender<Request>) -> Answer {
    // Not UTF-8: the JSON parser below says so in its reply.
    let line = String::from_utf8_lossy(bytes);
    if line.len() > MAX_REQUEST {
        return Reply::refused(format!(
            "command longer than {MAX_REQUEST} bytes; nothing was done"
        ))
        .into();
    }
    match serde_json::from_str::<Command>(&line) {
        Err(err) => Reply::refused(format!(
            "command not understood ({err}); nothing was done. Use the `enforcer` client of the \
             daemon's version"
        ))
        .into(),
        Ok(command) => {
            let (tx, rx) = oneshot::channel();
            if actor.send((command, tx)).await.is_err() {
                return Reply::refused("the daemon is shutting down; nothing was done").into();
            }
            rx.await
                .unwrap_or_else(|_| Reply::refused("the daemon stopped before answering").into())
        }
    }
}

/// How long a reply may wait for the client to read it before the connection is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay open between commands.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a client may leave streamed rows unread before its connection is dropped.
pub const ROWS_TIMEOUT: Duration = Duration::from_secs(60);

/// Send `command` to the daemon listening on `path` and wait for its reply (blocking).
///
/// # Errors
/// [`ControlError::NoDaemon`] when nothing answers; [`ControlError::Io`] or
/// [`ControlError::BadReply`] for a broken exchange.
pub fn call(path: &Path, command: &Command) -> Result<Reply, ControlError> {
    call_with_rows(path, command).map(|(reply, _)| reply)
}

/// Like [`call`], and the connection after the reply line: what a streamed `stats` sends
/// there (SIM rows until the daemon closes the connection).
///
/// # Errors
/// As [`call`].
pub fn call_with_rows(
    path: &Path,
    command: &Command,
) -> Result<(Reply, BufReader<UnixStream>), ControlError> {
    let mut client = Client::connect(path)?;
    let reply = client.call(command)?;
    Ok((reply, client.reader))
}

/// A connection kept open for many commands, one after another (each reply read before the
/// next command is sent): what a client sending a stream of changes uses, rather than a
/// connection per command. Not for a streamed `stats`, whose rows end the connection.
pub struct Client {
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

impl Client {
    /// Connect to the daemon listening on `path`.
    ///
    /// # Errors
    /// [`ControlError::NoDaemon`] when nothing answers; [`ControlError::Io`] otherwise.
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(path).map_err(|source| ControlError::NoDaemon {
            path: path.to_owned(),
            source,
        })?;
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .map_err(|source| ControlError::Io {
                what: "configuring",
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            // Large enough for a streamed `stats` read through `call_with_rows`.
            reader: BufReader::with_capacity(1 << 16, stream),
            path: path.to_owned(),
        })
    }

    /// Send `command` and wait for its reply.
    ///
    /// # Errors
    /// [`ControlError::Io`] or [`ControlError::BadReply`] for a broken exchange (the
    /// connection is of no further use then).
    pub fn call(&mut self, command: &Command) -> Result<Reply, ControlError> {
        let io_err = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| ControlError::Io { what, path, source }
        };
        let mut line = serde_json::to_vec(command)
            .map_err(|e| io_err("encoding for", &self.path)(e.into()))?;
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(io_err("writing to", &self.path))?;
        if self.reader.buffer().is_empty() {
            readable(self.reader.get_ref())
                .map_err(io_err("reading the reply from", &self.path))?;
        }
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .map_err(io_err("reading the reply from", &self.path))?;
        if n == 0 {
            return Err(io_err("reading the reply from", &self.path)(
                io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        serde_json::from_str(&reply).map_err(|e| ControlError::BadReply {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }
}

/// Wait until `stream` has data to read, or [`CLIENT_TIMEOUT`].
///
/// A thread blocked in `recv` on a Unix stream socket is also woken each time the peer reads
/// what it sent (the kernel's write-space wake-up does not say which event it is for), so a
/// client waiting for its reply that way is woken, and the daemon's CPU interrupted, once for
/// nothing per command. `poll` for `POLLIN` is woken only by data (or a hang-up).
fn readable(stream: &UnixStream) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = i32::try_from(CLIENT_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `fd` is one valid pollfd that lives across the call; `stream` keeps the
        // descriptor open.
        let n = unsafe { libc::poll(&raw mut fd, 1, timeout) };
        match n {
            0 => return Err(io::ErrorKind::TimedOut.into()),
            n if n > 0 => return Ok(()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}
