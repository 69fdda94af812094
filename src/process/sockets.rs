//! The TCP sockets of an endpoint, from procfs (`net/tcp`, `net/tcp6`): its listening sockets
//! and the server side of one connection, by inode (`holders` finds the processes holding them).
//!
//! A connection reaches one worker of an app; to know which, the daemon keeps the connection
//! open and finds its server-side socket's inode in the kernel's table (it has one only once a
//! process accepted it). The tables are read as hostile: a line that does not parse is
//! skipped, never a panic, and the read is bounded.
//!
//! `net/tcp` is a `seq_file`: each `read` returns whole lines up to a page, whatever the buffer,
//! so it is read until a read returns nothing, streamed through a 64 KiB buffer (a node's table
//! can be megabytes: it is never held whole). It describes the network namespace of the reading
//! process: in a pod, the app's.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::ProcFs;

/// Most of `net/tcp` or `net/tcp6` read (150 bytes a socket: about 100,000 sockets).
const TABLE_LIMIT: usize = 16 << 20;
/// The state of a listening socket in `net/tcp` (`TCP_LISTEN`).
const LISTEN: u8 = 0x0A;

/// One line of `net/tcp` or `net/tcp6`, addresses IPv4 when they are IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (unspecified for a listener).
    pub remote: SocketAddr,
    /// TCP state (`0A`: listening, `01`: established).
    pub state: u8,
    /// The socket's inode; 0 while no process holds it (a connection not yet accepted).
    pub inode: u64,
}

/// What the kernel's tables say about an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Inodes of the sockets listening where a connection to the endpoint may land.
    pub listening: Vec<u64>,
    /// Inode of the server side of the connection asked about, once accepted.
    pub accepted: Option<u64>,
}

/// Parses one line; `None` for the header and anything garbled.
pub(crate) fn parse_line(line: &str) -> Option<Entry> {
    let mut f = line.split_ascii_whitespace();
    f.next()?.strip_suffix(':')?.parse::<u64>().ok()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let st = f.next()?;
    let state = (st.len() == 2).then(|| u8::from_str_radix(st, 16).ok())??;
    // tx:rx queue, timer, retransmits, uid, timeout, then the inode.
    let inode = f.nth(5)?.parse().ok()?;
    Some(Entry {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90`: the address as the kernel holds it, each 32-bit word printed in the host's
/// byte order, and the port.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = (port.len() == 4).then(|| u16::from_str_radix(port, 16).ok())??;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            plain(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; any other unchanged.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a socket listening on `local` takes connections made to `endpoint`: the address
/// itself, or a wildcard of its family (`::` takes IPv4 too unless `IPV6_V6ONLY`, which the
/// table does not show: counted).
fn takes(local: SocketAddr, endpoint: SocketAddr) -> bool {
    let ip = plain(endpoint.ip());
    local.port() == endpoint.port()
        && (local.ip() == ip
            || match local.ip() {
                IpAddr::V4(a) => a.is_unspecified() && ip.is_ipv4(),
                IpAddr::V6(a) => a.is_unspecified(),
            })
}

/// The listening sockets for `server`, and with `client` (the local address of a connection to
/// it) that connection's server side.
pub(crate) fn find(
    procfs: &ProcFs,
    server: SocketAddr,
    client: Option<SocketAddr>,
) -> io::Result<Found> {
    let mut found = Found::default();
    let (server_ip, client) = (
        plain(server.ip()),
        client.map(|c| (plain(c.ip()), c.port())),
    );
    let mut tables = 0;
    for table in ["net/tcp", "net/tcp6"] {
        let each = |e: Entry| {
            if e.state == LISTEN {
                if takes(e.local, server) && e.inode != 0 && !found.listening.contains(&e.inode) {
                    found.listening.push(e.inode);
                }
            } else if e.local.ip() == server_ip
                && e.local.port() == server.port()
                && client == Some((e.remote.ip(), e.remote.port()))
                && e.inode != 0
            {
                found.accepted = Some(e.inode);
            }
        };
        match each_entry(&procfs.root().join(table), each) {
            Ok(()) => tables += 1,
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if tables == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no net/tcp in procfs",
        ));
    }
    Ok(found)
}

/// Calls `f` with each entry of the table at `path` (at most [`TABLE_LIMIT`] bytes of it).
fn each_entry(path: &std::path::Path, mut f: impl FnMut(Entry)) -> io::Result<()> {
    let mut file = crate::files::open_proc(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut kept, mut total) = (0, 0);
    loop {
        let n = match file.read(&mut buf[kept..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        total += n;
        let end = kept + n;
        // Whole lines only; a line longer than the buffer is garbage, dropped.
        let last = buf[..end].iter().rposition(|&b| b == b'\n');
        let whole = match (n, last) {
            (0, _) => end,
            (_, Some(i)) => i + 1,
            (_, None) if end == buf.len() => end,
            (_, None) => {
                kept = end;
                continue;
            }
        };
        for line in buf[..whole].split(|&b| b == b'\n') {
            if let Some(e) = std::str::from_utf8(line).ok().and_then(parse_line) {
                f(e);
            }
        }
        buf.copy_within(whole..end, 0);
        kept = end - whole;
        if n == 0 || total >= TABLE_LIMIT {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// The inode of a socket, as the kernel's tables and `fd/` name it.
    pub(crate) fn inode(fd: &impl std::os::fd::AsFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
        f.metadata().unwrap().ino()
    }

    #[test]
    fn a_real_listener_and_connection_are_found() {
        let procfs = ProcFs::new("/proc");
        // A listener on the address itself, on IPv6, on the IPv4 wildcard, and on `::`
        // reached through IPv4 (its connections are IPv4-mapped in tcp6).
        for (bind, connect) in [
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::1]:0", "::1"),
            ("0.0.0.0:0", "127.0.0.1"),
            ("[::]:0", "127.0.0.1"),
        ] {
            let l = TcpListener::bind(bind).unwrap();
            let endpoint =
                SocketAddr::new(connect.parse().unwrap(), l.local_addr().unwrap().port());
            let client = TcpStream::connect(endpoint).unwrap();
            let (server, _) = l.accept().unwrap();
            let found = find(
                &procfs,
                client.peer_addr().unwrap(),
                Some(client.local_addr().unwrap()),
            )
            .unwrap();
            assert_eq!(found.listening, vec![inode(&l)], "{bind}");
            assert_eq!(found.accepted, Some(inode(&server)), "{bind}");
            // The client's side is not the server's.
            assert_ne!(found.accepted, Some(inode(&client)));
        }
    }

    #[test]
    fn another_port_and_an_unaccepted_connection_are_not_found() {
        let procfs = ProcFs::new("/proc");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        // Connected but not accepted: the server side has no inode yet.
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let found = find(
            &procfs,
            l.local_addr().unwrap(),
            Some(client.local_addr().unwrap()),
        )
        .unwrap();
        assert_eq!(found.listening, vec![inode(&l)]);
        assert!(!found.listening.contains(&inode(&other)));
        assert_eq!(found.accepted, None);
        // A listener on ::1 does not take connections to 127.0.0.1.
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let port = v6.local_addr().unwrap().port();
        let found = find(&procfs, SocketAddr::from(([127, 0, 0, 1], port)), None).unwrap();
        assert!(found.listening.is_empty(), "{found:?}");
    }

    #[test]
    fn garbled_lines_are_skipped() {
        let good = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0";
        let e = parse_line(good).unwrap();
        assert_eq!(e.local, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!((e.state, e.inode), (LISTEN, 4242));
        for bad in [
            "",
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
            "   1: 0100007F:1F90 00000000:0000 0A",
            "   1: 0100007G:1F90 00000000:0000 0A 0:0 0:0 0 0 0 4242",
            "   1: 0100007F:1F9000 00000000:0000 0A 0:0 0:0 0 0 0 4242",
            "   1: 00007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 4242",
            "   1: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 -1",
            "   1: 0100007F:1F90 00000000:0000 A 0:0 0:0 0 0 0 4242",
            "   x: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 4242",
            "   1: 0100007\u{e9}:1F90 00000000:0000 0A 0:0 0:0 0 0 0 4242",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
        // The same through a procfs root of the test's own: garbage around a good line, a line
        // longer than the reader's buffer, bytes that are not UTF-8, no tcp6.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("net")).unwrap();
        let mut table = b"header\n\xff\xfe garbage\n".to_vec();
        table.extend(std::iter::repeat_n(b'7', 200_000));
        table.extend(format!("\n{good}\n{}", &good[..40]).as_bytes());
        std::fs::write(root.path().join("net/tcp"), table).unwrap();
        let found = find(
            &ProcFs::new(root.path()),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            None,
        );
        assert_eq!(found.unwrap().listening, vec![4242]);
        assert!(
            find(
                &ProcFs::new("/nonexistent"),
                SocketAddr::from(([127, 0, 0, 1], 1)),
                None
            )
            .is_err()
        );
    }
}
