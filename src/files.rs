//! Opening files that may be hostile or broken: every file the daemon reads goes through here.
//!
//! A FIFO where a file was expected blocks `open()` forever; a device may do anything when it is
//! opened; a file may be gigabytes. So a file is opened with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`
//! (an open that cannot block), checked on the open descriptor with `fstat` (a FIFO swapped in
//! after a `stat` is still caught), read only when it is a regular file, and read with a size
//! limit. Special files are never opened at all when a `stat` already shows them. Buffers that
//! may hold secrets are wiped when dropped ([`Zeroizing`]).
//!
//! Every open is an `openat(2)`: musl's `open()` follows an `O_CLOEXEC` open with an
//! `fcntl(F_SETFD)` (for kernels older than 2.6.23), a system call on the reload path for
//! nothing; `openat` is passed straight to the kernel. A directory walk opens its entries
//! relative to the directory's descriptor (`open_known_regular_at`): one path component to
//! resolve instead of the whole path.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

pub(crate) use zeroize::Zeroizing;

/// Descriptors whose `close` waits until the action they led to is taken: a scan on the
/// reload path keeps the files and directories it read open, and the group closes them once
/// its targets have acted (one system call each, none of them between the event and the
/// action). Cloning gives an empty list: only the original closes.
#[derive(Default)]
pub struct Closing(Vec<File>);

impl Closing {
    /// Keeps `file` open until this is dropped.
    pub(crate) fn defer(&mut self, file: File) {
        self.0.push(file);
    }
}

impl Clone for Closing {
    fn clone(&self) -> Self {
        Closing::default()
    }
}

impl std::fmt::Debug for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Closing({} open)", self.0.len())
    }
}

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Nothing is there.
    NotFound,
    /// Not a regular file (a FIFO, socket, device or directory): never read.
    NotRegular(&'static str),
    /// Larger than the limit given.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Any other I/O error.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => f.write_str("it does not exist"),
            ReadError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge { limit } => {
                write!(f, "it is larger than {} (the limit)", bytes(*limit))
            }
            ReadError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "{e} (the sidecar runs as uid {})",
                nix::unistd::geteuid()
            ),
            ReadError::Io(e) if crate::report::resources::of(e).is_some() => {
                write!(
                    f,
                    "{e} (the daemon is out of resources: see /status resources)"
                )
            }
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            ReadError::NotFound
        } else {
            ReadError::Io(e)
        }
    }
}

/// `1 MiB`, `64 KiB`, `12 B`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// What kind of file `md` describes, for messages: `a FIFO`, `a socket`, ...
pub(crate) fn kind_of(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without any chance of blocking, and only when it is a regular file.
/// Symlinks are followed (kubelet's volumes are made of them); the file's metadata comes from the
/// open descriptor.
pub(crate) fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    // A stat first: special files are not even opened (opening a device may have effects).
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(ReadError::NotRegular(kind_of(&md)));
    }
    open_known_regular_at(AT_FDCWD, path.as_os_str())
}

/// Opens a path a `stat` has just shown to be a regular file: the open cannot block, and the
/// file is checked again on the descriptor.
pub(crate) fn open_known_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    open_known_regular_at(AT_FDCWD, path.as_os_str())
}

/// Opens `name` relative to the directory `dir` (a directory walk, whose entry said it is a
/// regular file): the open cannot block, and the file is checked again on the descriptor.
pub(crate) fn open_known_regular_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> Result<(File, Metadata), ReadError> {
    let file = open_nonblocking(dir, name, OFlag::empty())?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(ReadError::NotRegular(kind_of(&md)));
    }
    Ok((file, md))
}

/// `openat(dir, name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | extra)`.
/// Running out of descriptors is recorded ([`crate::report::resources`]).
pub(crate) fn open_nonblocking(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    extra: OFlag,
) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | extra;
    match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(e) => {
            let e = io::Error::from(e);
            crate::report::resources::check(&e);
            Err(e)
        }
    }
}

/// Reads all of an open regular file, at most `limit` bytes; the buffer is wiped when dropped.
/// A file already larger than the limit is refused, and so is one that grows past it while it is
/// read.
pub(crate) fn read_open(
    mut file: &File,
    md: &Metadata,
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    if md.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let size = md.len() as usize;
    let mut buf = Zeroizing::new(vec![0u8; size]);
    // The size `fstat` gave, read whole: the usual case, with no read for the end of the file.
    let mut got = 0;
    while got < size {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    if got == size && size > 0 {
        return Ok(buf);
    }
    // Shorter than its size, or a size `fstat` does not know: read to the end, one byte past
    // the limit telling a file that grew from one exactly at it.
    file.take(limit + 1 - got as u64).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(buf)
}

/// Opens and reads a regular file of at most `limit` bytes (pid files, token files, key files,
/// the state file).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let (file, md) = open_regular(path)?;
    read_open(&file, &md, limit)
}

/// Reads a kernel-generated file (`/proc/<pid>/stat`, `status`, `cmdline`, `mountinfo`): a
/// non-blocking open, reads until one returns nothing, at most `limit` bytes; longer content is
/// cut at the limit.
pub(crate) fn read_proc(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let file = open_proc(path)?;
    // Most of these files fit a stack buffer: no allocation beyond the result.
    let mut first = [0u8; 4096];
    let want = limit.min(first.len());
    let n = read_retrying(&file, &mut first[..want])?;
    let mut buf = first[..n].to_vec();
    // A short read is not the end: seq_file tables (mountinfo, net/tcp) come a page or so per
    // read. Only a read that returns nothing is.
    while n > 0 && buf.len() < limit {
        let len = buf.len();
        buf.resize((len * 2).max(len + 4096).min(limit), 0);
        let n = read_retrying(&file, &mut buf[len..])?;
        buf.truncate(len + n);
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}

/// Opens a kernel-generated file for reading. Non-blocking all the same: `--proc-root` may
/// point elsewhere than procfs, and a FIFO there must not hang the daemon.
pub(crate) fn open_proc(path: &Path) -> io::Result<File> {
    open_nonblocking(AT_FDCWD, path.as_os_str(), OFlag::empty())
}

/// `read(2)` on a procfs descriptor at offset 0 (the kernel regenerates the content for each
/// read from the start), retried on EINTR.
pub(crate) fn pread_proc(file: &File, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    buf.resize(limit.min(4096), 0);
    loop {
        match file.read_at(buf, 0) {
            Ok(n) if n == buf.len() && buf.len() < limit => {
                let grown = (buf.len() * 2).min(limit);
                buf.resize(grown, 0);
            }
            Ok(n) => {
                buf.truncate(n);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_retrying(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_table_longer_than_a_page_is_read_whole() {
        // net/tcp hands out about a page per read; enough listeners make it several pages.
        let listeners: Vec<_> = (0..64)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let whole = std::fs::read("/proc/self/net/tcp").unwrap();
        assert!(whole.len() > 8192, "{} bytes", whole.len());
        let read = read_proc(Path::new("/proc/self/net/tcp"), 4 << 20).unwrap();
        for l in &listeners {
            let port = format!(":{:04X} ", l.local_addr().unwrap().port());
            let text = String::from_utf8_lossy(&read);
            assert!(
                text.contains(&port),
                "port {port} missing from a read of {} bytes",
                read.len()
            );
        }
        // And the limit still holds.
        assert_eq!(
            read_proc(Path::new("/proc/self/net/tcp"), 5000)
                .unwrap()
                .len(),
            5000
        );
    }

    #[test]
    fn fifo_and_directory_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_limited(&fifo, 100),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_limited(dir.path(), 100),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read_limited(&dir.path().join("none"), 100),
            Err(ReadError::NotFound)
        ));
    }

    #[test]
    fn size_limit_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(&read_limited(&f, 5).unwrap()[..], b"12345");
        let e = read_limited(&f, 4).unwrap_err();
        assert_eq!(e.to_string(), "it is larger than 4 B (the limit)");
    }

    #[test]
    fn proc_files_are_read_whole_up_to_the_limit() {
        let status = read_proc(Path::new("/proc/self/status"), 64 * 1024).unwrap();
        assert!(status.starts_with(b"Name:"));
        assert!(String::from_utf8_lossy(&status).contains("SigCgt:"));
        let cut = read_proc(Path::new("/proc/self/status"), 10).unwrap();
        assert_eq!(cut.len(), 10);
        let f = File::open("/proc/self/status").unwrap();
        let mut buf = Vec::new();
        pread_proc(&f, &mut buf, 64 * 1024).unwrap();
        assert!(String::from_utf8_lossy(&buf).contains("SigCgt:"));
        pread_proc(&f, &mut buf, 64 * 1024).unwrap();
        assert!(buf.starts_with(b"Name:"), "read again from the start");
    }
}
