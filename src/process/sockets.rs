//! Which process holds which TCP socket, from procfs: the listening sockets of an endpoint and
//! the server side of one connection (`net/tcp`, `net/tcp6`), and the descriptors of processes
//! (`<pid>/fd/*` naming `socket:[INODE]`).
//!
//! A connection reaches one worker of an app; to know which, the daemon keeps the connection
//! open, finds its server-side socket's inode in the kernel's table (it has one only once a
//! process accepted it) and looks for that inode in the fd tables of the processes that hold
//! the endpoint's listening sockets. The kernel's tables are hostile in the sense that matters:
//! a line that does not parse is skipped, never a panic, and every read and walk is bounded.
//!
//! `net/tcp` is a `seq_file`: each `read` returns whole lines up to a page, whatever the buffer,
//! so it is read until a read returns nothing (`files::read_proc` stops at the first short read,
//! right for `stat` but not here). It describes the network namespace of the reading process:
//! in a pod, the app's.

use std::collections::HashSet;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ProcFs, ProcInfo};

/// Most descriptors looked at per process.
pub(crate) const FDS_PER_PROCESS: usize = 65_536;
/// Most processes whose descriptors are looked at.
pub(crate) const PROCESSES: usize = 4_096;
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

/// Why a process's descriptors could not be looked at.
#[derive(Debug)]
pub(crate) enum FdError {
    /// Another uid's (EACCES, EPERM): only the same uid or `CAP_SYS_PTRACE` may read them.
    Denied,
    /// It exited.
    Gone,
    /// Anything else.
    Other(io::Error),
}

/// Which of `wanted` the process `pid` holds (each once, in the order of its descriptors; at
/// most [`FDS_PER_PROCESS`] descriptors looked at).
pub(crate) fn holding(
    procfs: &ProcFs,
    pid: i32,
    wanted: &HashSet<u64>,
) -> Result<Vec<u64>, FdError> {
    let classify = |e: io::Error| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => FdError::Denied,
        Some(libc::ENOENT | libc::ESRCH) => FdError::Gone,
        _ => FdError::Other(e),
    };
    let dir = procfs.pid_path(pid, "fd");
    let mut out = Vec::new();
    let (mut denied, mut read) = (0, 0);
    for entry in std::fs::read_dir(&dir)
        .map_err(classify)?
        .take(FDS_PER_PROCESS)
    {
        let Ok(entry) = entry else { continue };
        // Root without CAP_SYS_PTRACE lists another uid's descriptors but cannot read them.
        let link = match std::fs::read_link(entry.path()) {
            Ok(l) => l,
            Err(e) => {
                if matches!(classify(e), FdError::Denied) {
                    denied += 1;
                }
                continue;
            }
        };
        read += 1;
        let inode = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:["))
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse().ok());
        if let Some(inode) = inode
            && wanted.contains(&inode)
            && !out.contains(&inode)
        {
            out.push(inode);
        }
    }
    if read == 0 && denied > 0 {
        return Err(FdError::Denied);
    }
    Ok(out)
}

/// A process whose descriptors could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// The process.
    pub info: ProcInfo,
    /// Its real uid, when its `status` could be read.
    pub uid: Option<u32>,
}

/// The processes that hold the listening sockets of an endpoint, and the one that holds a
/// connection's server side.
#[derive(Debug, Clone, Default)]
pub(crate) struct Holders {
    /// Holders of a listening socket none of whose direct children holds one (nginx's master
    /// keeps its listeners but never accepts: its workers do), in pid order.
    pub workers: Vec<ProcInfo>,
    /// The process that holds the accepted socket, when found.
    pub accepted_by: Option<ProcInfo>,
    /// Processes whose descriptors could not be read, in pid order (kernel threads left out).
    pub unreadable: Vec<Unreadable>,
    /// Processes left unread past [`PROCESSES`].
    pub skipped: usize,
}

impl Holders {
    /// The worker a connection accepted by `accepted_by` reached: itself, or for a server that
    /// forks a process per connection (PostgreSQL's backends), its parent; and the process
    /// that holds it when that is another (the backend).
    pub(crate) fn reached(&self) -> Option<(&ProcInfo, Option<&ProcInfo>)> {
        let by = self.accepted_by.as_ref()?;
        if let Some(w) = self.workers.iter().find(|w| w.pid == by.pid) {
            return Some((w, None));
        }
        let parent = self.workers.iter().find(|w| w.pid == by.ppid)?;
        Some((parent, Some(by)))
    }
}

/// Every live process of `procfs` looked at once: who holds `found`'s listening sockets, who
/// holds its accepted one.
pub(crate) fn holders(procfs: &ProcFs, found: &Found) -> io::Result<Holders> {
    let wanted: HashSet<u64> = found
        .listening
        .iter()
        .copied()
        .chain(found.accepted)
        .collect();
    let mut procs = procfs.processes()?;
    procs.sort_unstable_by_key(|p| p.pid);
    let mut out = Holders {
        skipped: procs.len().saturating_sub(PROCESSES),
        ..Holders::default()
    };
    let mut listeners: Vec<ProcInfo> = Vec::new();
    for p in procs.into_iter().take(PROCESSES) {
        match holding(procfs, p.pid, &wanted) {
            Ok(held) => {
                if found.accepted.is_some_and(|a| held.contains(&a)) {
                    out.accepted_by = Some(p.clone());
                }
                if held.iter().any(|i| found.listening.contains(i)) {
                    listeners.push(p);
                }
            }
            Err(FdError::Denied) => {
                // A kernel thread (no command line) holds no socket of an app.
                if procfs.cmdline(p.pid).is_ok_and(|c| c.is_empty()) {
                    continue;
                }
                let uid = procfs.status(p.pid).ok().map(|s| s.uid);
                out.unreadable.push(Unreadable { info: p, uid });
            }
            Err(FdError::Gone | FdError::Other(_)) => {}
        }
    }
    let parents: HashSet<i32> = listeners.iter().map(|p| p.ppid).collect();
    out.workers = listeners
        .into_iter()
        .filter(|p| !parents.contains(&p.pid))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;

    /// The inode of a socket, as the kernel's tables and `fd/` name it.
    fn inode(fd: &impl std::os::fd::AsFd) -> u64 {
        let f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
        f.metadata().unwrap().ino()
    }

    #[test]
    fn a_real_listener_and_connection_are_found_and_held_by_this_process() {
        let procfs = ProcFs::new("/proc");
        let me = std::process::id() as i32;
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
            let wanted: HashSet<u64> = [inode(&l), inode(&server)].into();
            let mut held = holding(&procfs, me, &wanted).unwrap();
            held.sort_unstable();
            let mut want: Vec<u64> = wanted.into_iter().collect();
            want.sort_unstable();
            assert_eq!(held, want, "{bind}");
            let h = holders(&procfs, &found).unwrap();
            assert!(h.workers.iter().any(|w| w.pid == me), "{bind}: {h:?}");
            assert_eq!(h.accepted_by.as_ref().map(|p| p.pid), Some(me), "{bind}");
            assert_eq!(
                h.reached().map(|(w, via)| (w.pid, via.is_some())),
                Some((me, false))
            );
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

    /// Set in the child [`another_uids_descriptors_are_unreadable`] starts: the pid to look at.
    const CHILD_OF: &str = "SECRET_RELOADER_TEST_SOCKETS_OF";

    #[test]
    fn another_uids_descriptors_are_unreadable() {
        let procfs = ProcFs::new("/proc");
        if let Ok(pid) = std::env::var(CHILD_OF) {
            // The child, as uid 65534 without capabilities: root's descriptors are closed to it.
            let pid: i32 = pid.parse().unwrap();
            assert!(matches!(
                holding(&procfs, pid, &HashSet::new()),
                Err(FdError::Denied)
            ));
            let h = holders(
                &procfs,
                &Found {
                    listening: vec![1],
                    accepted: None,
                },
            )
            .unwrap();
            let it = h
                .unreadable
                .iter()
                .find(|u| u.info.pid == pid)
                .expect("the parent unreadable");
            assert_eq!(it.uid, Some(0));
            // Its own are not.
            assert!(holding(&procfs, std::process::id() as i32, &HashSet::new()).is_ok());
            println!("checked as uid {}", nix::unistd::getuid());
            return;
        }
        if !nix::unistd::getuid().is_root() {
            // Not root: this process's own descriptors are another uid's to nobody, tested the
            // same way only by root (CI runs as root).
            return;
        }
        let me = std::process::id();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::sockets::tests::another_uids_descriptors_are_unreadable",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_OF, me.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("checked as uid 65534"),
            "{text}"
        );
        // And gone is not denied.
        assert!(matches!(
            holding(&procfs, i32::MAX, &HashSet::new()),
            Err(FdError::Gone)
        ));
    }
}
