//! Traffic for end-to-end tests and the demo, run inside a namespace with `ip netns exec`.
//!
//! - `netprobe serve tcp:IP:PORT udp:IP:PORT …`: accept TCP connections (and close them) and
//!   echo UDP datagrams, until killed.
//! - `netprobe tcp SRC DST PORT`: connect from SRC; exit 0 if the handshake completes.
//! - `netprobe udp SRC DST PORT [COUNT]`: send COUNT datagrams from SRC, one at a time, each
//!   waiting for its echo; print how many came back; exit 0 if all did.
//!
//! Timeouts are short (400 ms): a dropped packet is the expected outcome of half the probes.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    process::ExitCode,
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_millis(400);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") if args.len() == 4 => tcp(&args[1], &args[2], &args[3]),
        Some("udp") if args.len() >= 4 => udp(&args[1], &args[2], &args[3], args.get(4).map_or("1", String::as_str)),
        _ => Err("usage: netprobe serve tcp:IP:PORT|udp:IP:PORT… | tcp SRC DST PORT | udp SRC DST PORT [COUNT]".into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("netprobe: {e}");
            ExitCode::from(2)
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn addr(ip: &str, port: &str) -> Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse::<IpAddr>()?, port.parse()?))
}

fn serve(specs: &[String]) -> Result<bool> {
    let mut threads = Vec::new();
    for spec in specs {
        let (kind, rest) = spec
            .split_once(':')
            .ok_or("spec is tcp:IP:PORT or udp:IP:PORT")?;
        let (ip, port) = rest
            .rsplit_once(':')
            .ok_or("spec is tcp:IP:PORT or udp:IP:PORT")?;
        let at = addr(ip.trim_matches(['[', ']']), port)?;
        match kind {
            "tcp" => {
                let listener = TcpListener::bind(at)?;
                threads.push(std::thread::spawn(move || {
                    for stream in listener.incoming().flatten() {
                        drop(stream);
                    }
                }));
            }
            "udp" => {
                let socket = UdpSocket::bind(at)?;
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while let Ok((len, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..len], from);
                    }
                }));
            }
            other => return Err(format!("unknown kind {other}").into()),
        }
    }
    println!("ready");
    for thread in threads {
        let _ = thread.join();
    }
    Ok(true)
}

fn tcp(src: &str, dst: &str, port: &str) -> Result<bool> {
    let to = addr(dst, port)?;
    let socket = socket2_like::bound_tcp(addr(src, "0")?)?;
    Ok(socket2_like::connect(socket, to).is_ok())
}

fn udp(src: &str, dst: &str, port: &str, count: &str) -> Result<bool> {
    let socket = UdpSocket::bind(addr(src, "0")?)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let to = addr(dst, port)?;
    let count: u32 = count.parse()?;
    let mut echoed = 0;
    for i in 0..count {
        let payload = format!("probe {i}");
        socket.send_to(payload.as_bytes(), to)?;
        let mut buf = [0u8; 64];
        if let Ok((len, _)) = socket.recv_from(&mut buf)
            && &buf[..len] == payload.as_bytes()
        {
            echoed += 1;
        }
    }
    println!("{echoed}");
    Ok(echoed == count)
}

/// A TCP connect from a chosen source address with a timeout, using libc (std cannot bind
/// before connecting).
mod socket2_like {
    use std::{
        io,
        net::{SocketAddr, TcpStream},
        os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    };

    use super::TIMEOUT;

    fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, libc::socklen_t::try_from(len).unwrap_or(0))
    }

    pub fn bound_tcp(src: SocketAddr) -> io::Result<OwnedFd> {
        let family = if src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (addr, len) = sockaddr(src);
        // SAFETY: `addr` is a valid sockaddr of `len` bytes for the socket's family.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    pub fn connect(fd: OwnedFd, to: SocketAddr) -> io::Result<()> {
        // Non-blocking connect, then wait for writability up to TIMEOUT.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let (addr, len) = sockaddr(to);
        // SAFETY: `addr` is a valid sockaddr of `len` bytes.
        let ret = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(io::Error::last_os_error());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = i32::try_from(TIMEOUT.as_millis()).unwrap_or(400);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if ready <= 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        match TcpStream::from(fd).take_error()? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
